"""Failures that explain themselves: what clients show, and the reason in the proxy's log, once.

Every upstream failure is logged at WARNING with the registry, its endpoint
and the reason, at most once a minute per upstream; clients that print only
the HTTP status (skopeo, podman) send the operator there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from .admin import Admin, new_token
from .bgserver import BackgroundApp
from .daemons import Dockerd
from .http import get
from .proxyproc import ProxyFactory, ProxyProcess
from .test_clients_podman import Podman
from .tools import free_port, skopeo
from .upstream import MANIFEST_ACCEPT, Upstream

REGISTRY = "failing.example"


def warnings_naming(proxy: ProxyProcess, text: str) -> list[str]:
    return [line for line in proxy.log_text().splitlines() if " WARNING " in line and text in line]


def pull_fails(proxy: ProxyProcess, status: int, *, times: int = 6) -> str:
    """A burst of pulls of one manifest; the message of the last answer."""
    message = ""
    for _ in range(times):
        reply = get(proxy.host, f"/v2/{REGISTRY}/team/app/manifests/1", Accept=MANIFEST_ACCEPT)
        assert reply.status == status, reply.body
        message = reply.error_message
    return message


@pytest.fixture
def answers_503() -> Iterator[BackgroundApp]:
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"errors": [{"code": "UNAVAILABLE", "message": "backend storage is down"}]},
                                 status=503, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    server = BackgroundApp(app, name="e2e-503-upstream")
    yield server
    server.stop()


def test_an_unreachable_upstream_is_logged_once_with_its_endpoint_and_reason(make_proxy: ProxyFactory) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": endpoint}]})
    message = pull_fails(proxy, 503)
    [line] = warnings_naming(proxy, REGISTRY)
    assert f"upstream {REGISTRY} at {endpoint} failed: registry {REGISTRY} ({endpoint}) is unreachable: " in line
    assert "Connect call failed" in line or "Connection refused" in line, line
    assert message.startswith(f"upstream {REGISTRY} is left alone for now")  # the breaker opened after 5


def test_a_tls_mismatch_is_logged_once_with_its_endpoint_and_reason(tls_upstream: Upstream,
                                                                     make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": tls_upstream.url}]})
    message = pull_fails(proxy, 502, times=5)  # the sixth would find the breaker open
    assert message.startswith(f"TLS with {REGISTRY} failed: certificate signed by unknown authority")
    [line] = warnings_naming(proxy, REGISTRY)
    assert f"upstream {REGISTRY} at {tls_upstream.url} failed: {message}" in line


def test_a_5xx_is_logged_once_with_its_endpoint_and_reason(answers_503: BackgroundApp,
                                                           make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": answers_503.url}]})
    message = pull_fails(proxy, 502)
    assert message == f"upstream {REGISTRY} answered HTTP 503: backend storage is down"
    [line] = warnings_naming(proxy, REGISTRY)
    assert line.endswith(f"upstream {REGISTRY} at {answers_503.url} failed: {message}")


# -- what the clients print ------------------------------------------------------------------------------------


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    (tmp_path / "registries.conf").write_text("")
    client = Podman(tmp_path / "podman", tmp_path / "registries.conf")
    yield client
    client.cleanup()


def test_skopeo_and_podman_print_the_status_and_the_log_has_the_reason(podman: Podman,
                                                                        make_proxy: ProxyFactory) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": endpoint}]})
    ref = f"{proxy.host}/{REGISTRY}/team/app:1"

    inspected = skopeo("inspect", "--tls-verify=false", f"docker://{ref}")
    assert inspected.returncode != 0
    assert SKOPEO_SAYS in inspected.stderr, inspected.stderr
    assert "unreachable" not in inspected.stderr  # the reason is not shown: it is in the log
    pulled = podman("pull", "--tls-verify=false", "--signature-policy", str(podman.policy), ref, check=False)
    assert pulled.returncode != 0
    assert PODMAN_SAYS in pulled.stderr, pulled.stderr
    assert "unreachable" not in pulled.stderr

    [line] = warnings_naming(proxy, REGISTRY)
    assert f"upstream {REGISTRY} at {endpoint} failed: registry {REGISTRY} ({endpoint}) is unreachable" in line

    # A 4xx body they do print: here the whitelist's 403.
    whitelisted = make_proxy({"settings": {"registry.whitelist": "quay.io"}}, name="whitelisted")
    denied = f"denied: registry {REGISTRY} is not in registry.whitelist"
    ref = f"{whitelisted.host}/{REGISTRY}/team/app:1"
    assert denied in skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stderr
    assert denied in podman("pull", "--tls-verify=false", "--signature-policy", str(podman.policy), ref,
                            check=False).stderr


# What README.md ("When an upstream fails") says they print: the status line, not the body.
SKOPEO_SAYS = PODMAN_SAYS = DOCKER_SAYS = "received unexpected HTTP status: 503 Service Unavailable"


def test_docker_prints_the_status_and_the_log_has_the_reason(dockerd: Dockerd, make_proxy: ProxyFactory) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": endpoint}]})
    dockerd.reconfigure({"insecure-registries": [proxy.host]})
    pulled = dockerd.docker("pull", f"{proxy.host}/{REGISTRY}/team/app:1", check=False)
    assert pulled.returncode != 0
    assert pulled.stderr.strip() == f"Error response from daemon: {DOCKER_SAYS}", pulled.stderr
    [line] = warnings_naming(proxy, REGISTRY)
    assert f"upstream {REGISTRY} at {endpoint} failed: registry {REGISTRY} ({endpoint}) is unreachable" in line


# -- a refused stored credential ----------------------------------------------------------------------------------


def test_a_refused_stored_credential_is_named_to_the_client_and_in_the_log(make_upstream: object,
                                                                           make_proxy: ProxyFactory) -> None:
    upstream = make_upstream("htpasswd", auth="htpasswd", users={"alice": "right-" + new_token()})  # type: ignore[operator]
    wrong = "wrong-" + new_token()
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "authup.local", "endpoint": upstream.url, "username": "alice",
                                        "password": wrong}]}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    [credential] = Admin(proxy.host, token).registries()
    named = f"upstream authup.local refused credential {credential['id']} (user alice)"

    result = skopeo("inspect", "--tls-verify=false", f"docker://{proxy.host}/authup.local/team/app:1")
    assert result.returncode != 0
    assert f"unauthorized: {named}" in result.stderr, result.stderr
    reply = get(proxy.host, "/v2/authup.local/team/app/manifests/1", Accept=MANIFEST_ACCEPT)
    assert reply.status == 401 and reply.error_message.startswith(named + ": ")
    [line] = warnings_naming(proxy, "authup.local")
    assert f"failed: {named}" in line
    log = proxy.log_text()
    assert wrong not in log and wrong not in result.stderr and wrong not in reply.body.decode()


# -- registry.default that can never work ----------------------------------------------------------------------


def test_a_default_registry_that_cannot_work_warns_through_the_api_and_at_start(make_proxy: ProxyFactory) -> None:
    token = new_token()
    proxy = make_proxy({"settings": {"registry.default": "127.0.0.1:5999"}}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    guarded = ("the default registry 127.0.0.1:5999 is a loopback or private address and not a configured "
               "registry, so the SSRF guard refuses it")
    assert re.search(rf" WARNING proxy\.app: {re.escape(guarded)}", proxy.log_text()), proxy.log_text()
    admin = Admin(proxy.host, token)
    answer = admin.set("registry.default", "10.0.0.7")
    assert [w for w in answer["warnings"] if "10.0.0.7 is a loopback or private address" in w], answer
    answer = admin.set("registry.default", "quay.io")
    assert "warnings" not in answer
    assert admin.set("registry.whitelist", "ghcr.io")["warnings"] == [
        "the default registry quay.io is not in registry.whitelist: unprefixed pulls will now fail"]
    # Unset: back to the file's default, and its warnings with it.
    unset = admin.ok("DELETE", "/settings/registry.default")
    assert unset["value"] == "127.0.0.1:5999"
    assert [w for w in unset["warnings"] if w.startswith(guarded)] and len(unset["warnings"]) == 2, unset
