"""Who may pull: pull keys, the proxy's token realm, anonymous admission, and the admin port.

The proxy's clients log in the way registries expect: /v2/ challenges, the
realm at /auth/token trades a pull key (or nothing, where an environment
admits the client's address) for a token.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .admin import Admin, new_token
from .http import Reply, basic, call, get
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .scrape import scrape
from .tokenserver import TokenServer
from .tools import free_port, skopeo, skopeo_ok, wait_until
from .upstream import MANIFEST_ACCEPT, Upstream

REGISTRY = "registry.example.com"
REALM = "/auth/token?service=registry-proxy"


def start(make_proxy: ProxyFactory, upstream: Upstream | None = None, **config: Any) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    registries = [] if upstream is None else [{"address": REGISTRY, "endpoint": upstream.url,
                                               "token_realms": upstream.token_realms}]
    proxy = make_proxy({"registries": registries, **config}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    return proxy, Admin(proxy.host, token)


def key_basic(key: dict[str, Any]) -> str:
    return basic(key["id"], key["secret"])


def realm_token(proxy: ProxyProcess, key: dict[str, Any]) -> str:
    reply = get(proxy.host, REALM, Authorization=key_basic(key))
    assert reply.status == 200, reply.body
    return str(reply.json()["token"])


def assert_unauthorized(reply: Reply) -> None:
    assert reply.status == 401, (reply.status, reply.body[:200])
    assert reply.error_codes == ["UNAUTHORIZED"]
    assert reply.headers["www-authenticate"].startswith("Bearer realm=")


def test_realm_is_the_external_url(make_proxy: ProxyFactory) -> None:
    proxy, _ = start(make_proxy, external_url="https://proxy.example.test")
    reply = get(proxy.host, "/v2/")
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == (
        'Bearer realm="https://proxy.example.test/auth/token",service="registry-proxy"')


def test_anonymous_pulls_follow_the_environments_that_admit_them(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    proxy, admin = start(make_proxy, token_upstream, environments=[{"name": "default", "anonymous_pull": False}])
    path = f"/v2/{REGISTRY}/private/app/manifests/1"
    anonymous = ("copy", "--retry-times=0", "--src-tls-verify=false", "--src-no-creds",
                 f"docker://{proxy.host}/{REGISTRY}/private/app:1")

    assert_unauthorized(get(proxy.host, REALM))
    assert_unauthorized(get(proxy.host, path, Accept=MANIFEST_ACCEPT))
    assert skopeo(*anonymous, f"dir:{tmp_path / 'refused'}").returncode != 0
    assert scrape(proxy)("registry_proxy_auth_failures_total", environment="unknown", reason="anonymous_refused") >= 3

    # lab admits anonymous clients from one address, and pulls with its own credential.
    admin.environment("lab", anonymous_pull=True, anonymous_from=["127.0.0.2/32"])
    user, password = next(iter(token_server.users.items()))
    admin.add(REGISTRY, user, password, environment="lab")
    assert_unauthorized(call(proxy.host, "GET", path, {"Accept": MANIFEST_ACCEPT}, source="127.0.0.1"))
    admitted = call(proxy.host, "GET", path, {"Accept": MANIFEST_ACCEPT}, source="127.0.0.2")
    assert admitted.status == 200 and admitted.body == image.manifest_bytes

    admin.ok("PATCH", "/environments/lab", {"anonymous_from": ["127.0.0.0/8"]})
    skopeo_ok(*anonymous, f"dir:{tmp_path / 'admitted'}")
    assert (tmp_path / "admitted" / "manifest.json").read_bytes() == image.manifest_bytes
    assert scrape(proxy)("registry_proxy_environment_requests_total", environment="lab") >= 2


def test_wrong_and_revoked_keys_are_refused_and_never_pull_anonymously(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    build_image(oci_layout, "1", layer_sizes=[2000])
    push(plain_upstream, oci_layout, "1", "org/app")
    # The default environment admits anonymous pulls from anywhere.
    proxy, admin = start(make_proxy, plain_upstream)
    path = f"/v2/{REGISTRY}/org/app/manifests/1"
    assert get(proxy.host, path, Accept=MANIFEST_ACCEPT).status == 200
    key = admin.key("default")
    token = realm_token(proxy, key)
    assert get(proxy.host, path, Accept=MANIFEST_ACCEPT, Authorization=f"Bearer {token}").status == 200

    for wrong in (basic(key["id"], "not-" + key["secret"]), basic("no-such-key", key["secret"])):
        assert_unauthorized(get(proxy.host, REALM, Authorization=wrong))
        assert_unauthorized(get(proxy.host, path, Accept=MANIFEST_ACCEPT, Authorization=wrong))
    # OAuth2's password grant, as containerd logs in.
    form = urlencode({"grant_type": "password", "username": key["id"], "password": "not-the-secret",
                      "service": "registry-proxy"}).encode()
    assert_unauthorized(call(proxy.host, "POST", "/auth/token",
                             {"Content-Type": "application/x-www-form-urlencoded"}, body=form))
    login = skopeo("login", "--tls-verify=false", f"--authfile={tmp_path / 'auth.json'}",
                   f"--username={key['id']}", "--password=not-the-secret", proxy.host)
    assert login.returncode != 0 and not (tmp_path / "auth.json").exists()

    assert admin.call("DELETE", f"/environments/default/keys/{key['id']}").status == 204
    assert_unauthorized(get(proxy.host, REALM, Authorization=key_basic(key)))
    assert_unauthorized(get(proxy.host, path, Accept=MANIFEST_ACCEPT, Authorization=key_basic(key)))
    revoked = get(proxy.host, path, Accept=MANIFEST_ACCEPT, Authorization=f"Bearer {token}")
    assert_unauthorized(revoked)
    assert 'error="invalid_token"' in revoked.headers["www-authenticate"]
    failures = scrape(proxy)
    # Two wrong secrets, the password grant and skopeo's login; two unknown keys and two revoked ones.
    assert failures("registry_proxy_auth_failures_total", environment="default", reason="wrong_secret") == 4
    assert failures("registry_proxy_auth_failures_total", environment="unknown", reason="unknown_key") == 4
    assert failures("registry_proxy_auth_failures_total", environment="default", reason="bad_token") == 1


def test_eleventh_failed_login_in_a_minute_is_refused_even_with_the_right_key(make_proxy: ProxyFactory) -> None:
    proxy, admin = start(make_proxy)
    key = admin.key("default")
    wrong = basic(key["id"], "not-" + key["secret"])
    for attempt in range(10):
        where = REALM if attempt % 2 else "/v2/"
        assert get(proxy.host, where, Authorization=wrong).status == 401, attempt

    for where in (REALM, "/v2/"):
        limited = get(proxy.host, where, Authorization=key_basic(key))
        assert limited.status == 429 and limited.error_codes == ["TOOMANYREQUESTS"], (where, limited.body)
        assert 0 < int(limited.headers["retry-after"]) <= 60
    # Per source address: another one logs in as usual.
    other = call(proxy.host, "GET", REALM, {"Authorization": key_basic(key)}, source="127.0.0.2")
    assert other.status == 200 and other.json()["token"]


def test_a_burst_of_guesses_is_limited_before_it_is_hashed(make_proxy: ProxyFactory) -> None:
    proxy, admin = start(make_proxy)
    key = admin.key("default")
    wrong = basic(key["id"], "not-" + key["secret"])
    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda _: get(proxy.host, REALM, Authorization=wrong).status, range(30)))
    assert sorted(set(statuses)) == [401, 429] and statuses.count(401) <= 10, statuses
    metric = scrape(proxy)
    assert metric("registry_proxy_auth_failures_total", environment="default", reason="wrong_secret") <= 10
    assert metric("registry_proxy_auth_failures_total", environment="unknown", reason="rate_limited") >= 20


def test_trusted_proxies_name_the_client_for_anonymous_admission(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    build_image(oci_layout, "1", layer_sizes=[1000])
    push(plain_upstream, oci_layout, "1", "org/app")
    path = f"/v2/{REGISTRY}/org/app/manifests/1"
    nodes = [{"name": "default", "anonymous_pull": False},
             {"name": "nodes", "anonymous_pull": True, "anonymous_from": ["10.9.0.0/16"]}]
    behind, _ = start(make_proxy, plain_upstream, environments=nodes, trusted_proxies=["127.0.0.1/32"])
    direct, _ = start(make_proxy, plain_upstream, environments=nodes)

    def status(proxy: ProxyProcess, forwarded: str, source: str = "127.0.0.1") -> int:
        return call(proxy.host, "GET", path, {"Accept": MANIFEST_ACCEPT, "X-Forwarded-For": forwarded},
                    source=source).status

    assert status(behind, "10.9.1.1") == 200
    # Read from the right: what the client wrote at the left end counts for nothing.
    assert status(behind, "10.9.1.1, 192.0.2.1") == 401
    # Only from a trusted proxy, and without trusted_proxies never.
    assert status(behind, "10.9.1.1", source="127.0.0.2") == 401
    assert status(direct, "10.9.1.1") == 401


def test_a_pull_key_cannot_use_the_admin_api(make_proxy: ProxyFactory) -> None:
    proxy, admin = start(make_proxy)
    key = admin.key("default")
    for header in (key_basic(key), f"Bearer {realm_token(proxy, key)}"):
        for method, path in (("GET", "/api/v1/registries"), ("GET", "/api/v1/environments/default/keys"),
                             ("POST", "/api/v1/environments/default/keys"), ("GET", "/status.json")):
            reply = call(proxy.host, method, path, {"Authorization": header})
            assert reply.status == 401, (method, path, header[:6], reply.status)
    assert [k["id"] for k in admin.ok("GET", "/environments/default/keys")["keys"]] == [key["id"]]


def test_key_secrets_are_shown_once_and_last_use_is_listed(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    build_image(oci_layout, "1", layer_sizes=[2000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy, admin = start(make_proxy, plain_upstream, log={"level": "debug"})
    admin.environment("team-a")
    key = admin.key("team-a")
    assert key["last_used"] is None
    skopeo_ok("copy", "--retry-times=0", "--src-tls-verify=false", f"--src-creds={key['id']}:{key['secret']}",
              f"docker://{proxy.host}/{REGISTRY}/org/app:1", f"dir:{tmp_path / 'out'}")

    listing = admin.ok("GET", "/environments/team-a/keys")
    auth = {"Authorization": f"Bearer {admin.token}"}
    status = call(proxy.host, "GET", "/status.json", auth).json()
    page = call(proxy.host, "GET", "/", auth).body.decode()
    wait_until(lambda: '"GET /status.json"' in proxy.log_text(), what="the access log line of /status.json")
    seen = {"log": proxy.log_text(), "listing": json.dumps(listing), "status.json": json.dumps(status), "page": page}
    for where, text in seen.items():
        assert key["secret"] not in text and key_basic(key).split()[1] not in text, where
    for stored in proxy.data_dir.glob("state.db*"):
        assert key["secret"].encode() not in stored.read_bytes(), stored.name

    [listed] = listing["keys"]
    assert listed["id"] == key["id"] and listed["last_used"] is not None and "secret" not in listed
    [team_a] = [env for env in status["environments"] if env["name"] == "team-a"]
    [shown] = team_a["keys"]
    assert shown["id"] == key["id"] and shown["last_used"] >= shown["created"]
    row = re.search(rf"<code>{re.escape(key['id'])}</code></td><td>[^<]*</td><td>(.*?)</td>", page)
    assert row is not None and "never" not in row[1], page
    assert f"env=team-a key={key['id']}" in proxy.log_text()


def test_admin_listen_keeps_the_admin_api_off_the_registry_port(make_proxy: ProxyFactory) -> None:
    admin_host = f"127.0.0.1:{free_port()}"
    proxy, admin = start(make_proxy, admin={"listen": admin_host})
    auth = {"Authorization": f"Bearer {admin.token}"}
    for path in ("/api/v1/registries", "/status.json", "/metrics", "/"):
        assert call(admin_host, "GET", path, auth).status == 200, path
        assert call(proxy.host, "GET", path, auth).status == 404, path
    for path in ("/v2/", REALM):
        assert call(admin_host, "GET", path).status == 404, path
    challenge = get(proxy.host, "/v2/")
    assert challenge.status == 401
    assert f'realm="http://{proxy.host}/auth/token"' in challenge.headers["www-authenticate"]
    assert get(proxy.host, REALM).status == 200
    for host in (proxy.host, admin_host):
        assert get(host, "/healthz").status == 200, host


def test_a_pull_token_that_is_not_utf_8_is_unauthorized(make_proxy: ProxyFactory) -> None:
    proxy, _ = start(make_proxy)
    # http.client sends a str header as latin-1, so these bytes are not UTF-8.
    for token in ("rp1.\xff.\xfe", "tökén"):
        for path in ("/v2/", "/v2/library/x/manifests/1"):
            assert_unauthorized(call(proxy.host, "GET", path, {"Authorization": f"Bearer {token}"}))
    assert "Traceback" not in proxy.log_text()
