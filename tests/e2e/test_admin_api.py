"""The admin API itself: input checks, write-only secrets, durability, config-managed entries."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from .admin import Admin, new_token
from .http import Reply, basic, call
from .proxyproc import ProxyFactory, ProxyProcess

PASSWORD = "pa55-Wr1te-0nly-" + new_token()
MAX_BODY = 1024 * 1024  # the documented limit of a request body


@pytest.fixture
def admin_proxy(make_proxy: ProxyFactory) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    proxy = make_proxy({}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    return proxy, Admin(proxy.host, token)


BAD_REGISTRIES: list[tuple[Any, str | None, str]] = [
    ({"address": "https://quay.io", "username": "u", "password": "p"}, "address", "drop the scheme: use `quay.io`"),
    ({"address": "quay.io/org", "username": "u", "password": "p"}, "address", "drop the path"),
    ({"address": "Quay.io", "username": "u", "password": "p"}, "address", "use lowercase"),
    ({"address": "quay .io", "username": "u", "password": "p"}, "address", "spaces"),
    ({"address": "quay.io:99999", "username": "u", "password": "p"}, "address", "not a hostname"),
    ({"address": "", "username": "u", "password": "p"}, "address", "not a hostname"),
    ({"address": 5, "username": "u", "password": "p"}, "address", "must be a string"),
    ({"username": "u", "password": "p"}, "address", "required"),
    ({"address": "quay.io", "username": "", "password": "p"}, "username", "must not be empty"),
    ({"address": "quay.io", "username": "a:b", "password": "p"}, "username", "':'"),
    ({"address": "quay.io", "username": None, "password": "p"}, "username", "must be a string"),
    ({"address": "quay.io", "username": "u", "password": ""}, "password", "must not be empty"),
    ({"address": "quay.io", "username": "u", "password": ["p"]}, "password", "must be a string"),
    ({"address": "quay.io", "username": "u"}, "password", "required"),
    ({"address": "quay.io", "username": "u", "password": "p", "email": "nope"}, "email", "name@example.com"),
    ({"address": "quay.io", "username": "u", "password": "p", "state": "active"}, "state", "unknown field"),
    (["quay.io"], None, "JSON object"),
]


@pytest.mark.parametrize("body,field,message", BAD_REGISTRIES)
def test_bad_registry_input_names_the_field_and_writes_nothing(admin_proxy: tuple[ProxyProcess, Admin], body: Any,
                                                               field: str | None, message: str) -> None:
    proxy, admin = admin_proxy
    reply = admin.call("POST", "/registries", body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert message in error["message"]
    assert admin.registries() == []


def test_malformed_requests(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    assert admin.call("POST", "/registries", raw=b"{not json").status == 400
    assert admin.call("POST", "/registries", raw=b"address=quay.io", content_type="text/plain").status == 415
    assert admin.call("PUT", "/settings/registry.default", {"value": "https://quay.io"}).json()["error"]["field"] == "value"
    bad_whitelist = admin.call("PUT", "/settings/registry.whitelist", {"value": "quay.io, ghcr.io/x"})
    assert bad_whitelist.status == 400 and "ghcr.io/x" in bad_whitelist.json()["error"]["message"]
    assert admin.call("PUT", "/settings/registry.default", {"value": 1}).status == 400
    assert admin.call("PUT", "/settings/registry.colour", {"value": "x"}).status == 404
    assert admin.call("GET", "/registries/abc").status == 404
    assert admin.call("DELETE", "/registries").json()["error"]["code"] == "method_not_allowed"
    unauthorized = admin.call("GET", "/registries", token="wrong-" + admin.token)
    assert unauthorized.status == 401 and unauthorized.json()["error"]["code"] == "unauthorized"
    assert call(proxy.host, "GET", "/api/v1/registries").status == 401
    assert [s["value"] for s in admin.ok("GET", "/settings")["settings"]] == ["docker.io", ""]


def test_passwords_are_write_only(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    cred = admin.add("quay.io", "robot", PASSWORD, email="ops@example.com")
    admin.ok("GET", f"/registries/{cred['id']}")
    admin.ok("GET", "/registries")
    admin.ok("PATCH", f"/registries/{cred['id']}", {"password": PASSWORD + "-2"})
    admin.call("PATCH", f"/registries/{cred['id']}", {"password": PASSWORD, "username": "bad:name"})
    admin.call("POST", "/registries", {"address": "quay.io", "username": "x", "password": PASSWORD, "bogus": 1})
    admin.ok("POST", f"/registries/{cred['id']}/deactivate")
    admin.call("DELETE", f"/registries/{cred['id']}")
    seen = b"".join(r.body + json.dumps(r.headers).encode() for r in admin.replies)
    assert PASSWORD.encode() not in seen
    assert PASSWORD not in proxy.log_text()
    assert all("password" not in r.json() for r in admin.replies[:3])


def test_acknowledged_writes_survive_kill_9(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    acknowledged: list[int] = []
    twenty_acknowledged = threading.Event()
    stop = threading.Event()

    def burst() -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                reply = admin.call("POST", "/registries", {"address": f"r{i}.example.com", "username": "u",
                                                           "password": f"p{i}"})
            except OSError:
                return
            if reply.status == 201:
                acknowledged.append(reply.json()["id"])
                if len(acknowledged) >= 20:
                    twenty_acknowledged.set()

    writer = threading.Thread(target=burst)
    writer.start()
    twenty_acknowledged.wait(10)
    proxy.kill()
    stop.set()
    writer.join(10)
    assert len(acknowledged) >= 20
    proxy.start()
    stored = {r["id"]: r for r in admin.registries()}
    assert set(acknowledged) <= set(stored)
    assert all(stored[i]["address"] == f"r{i - 1}.example.com" for i in acknowledged)


def test_config_registries_are_managed_by_the_file(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    token = new_token()
    config: dict[str, Any] = {
        "settings": {"registry.default": "quay.io"},
        "registries": [{"address": "quay.io", "username": "robot", "password": "from-file", "email": "a@b.cd"}],
    }
    proxy = make_proxy(config, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)
    [entry] = admin.registries()
    assert (entry["source"], entry["username"], entry["in_use"]) == ("config", "robot", True)
    refused = admin.call("PATCH", f"/registries/{entry['id']}", {"password": "x"})
    assert refused.status == 409 and "config file" in refused.json()["error"]["message"]
    assert admin.call("DELETE", f"/registries/{entry['id']}").status == 409
    assert admin.ok("GET", "/settings/registry.default") == {**admin.ok("GET", "/settings/registry.default"),
                                                            "value": "quay.io", "source": "config"}

    # A restart applies the file: a new username, and the default from the
    # file, but a value set through the API since stays.
    admin.set("registry.whitelist", "quay.io")
    proxy.stop()
    config["registries"][0]["username"] = "robot2"
    config["settings"] = {"registry.default": "ghcr.io", "registry.whitelist": "ghcr.io"}
    proxy.config_path.write_text(yaml.safe_dump({**proxy.config, **config}))
    proxy.start()
    [entry2] = admin.registries()
    assert (entry2["id"], entry2["username"]) == (entry["id"], "robot2")
    settings = {s["name"]: s for s in admin.ok("GET", "/settings")["settings"]}
    assert (settings["registry.default"]["value"], settings["registry.default"]["source"]) == ("ghcr.io", "config")
    assert (settings["registry.whitelist"]["value"], settings["registry.whitelist"]["source"]) == ("quay.io", "api")


def test_deleting_a_setting_goes_back_to_the_file_value_or_the_default(make_proxy: ProxyFactory) -> None:
    token = new_token()
    proxy = make_proxy({"settings": {"registry.whitelist": "quay.io"}}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)
    admin.set("registry.whitelist", "ghcr.io")
    admin.set("registry.default", "ghcr.io")

    reply = admin.call("DELETE", "/settings/registry.whitelist")
    assert reply.status == 200, reply.body
    assert {k: reply.json()[k] for k in ("name", "value", "source")} == {
        "name": "registry.whitelist", "value": "quay.io", "source": "config"}
    reply = admin.call("DELETE", "/settings/registry.default")
    # Back to Docker Hub, which the file's whitelist leaves out: said as a PUT would say it.
    assert reply.json() == {"name": "registry.default", "value": "docker.io", "source": "default", "updated": None,
                            "warnings": ["the default registry docker.io is not in registry.whitelist: "
                                         "unprefixed pulls will now fail"]}
    listed = admin.ok("GET", "/settings")["settings"]
    proxy.restart()
    assert [{k: s[k] for k in ("name", "value", "source")} for s in admin.ok("GET", "/settings")["settings"]] == \
        [{k: s[k] for k in ("name", "value", "source")} for s in listed] == [
        {"name": "registry.default", "value": "docker.io", "source": "default"},
        {"name": "registry.whitelist", "value": "quay.io", "source": "config"}]

    missing = admin.call("DELETE", "/settings/registry.nope")
    assert missing.status == 404
    assert missing.json()["error"] == {"code": "not_found", "field": "name",
                                       "message": "no setting 'registry.nope'; settings: registry.default, "
                                                  "registry.whitelist"}


def test_generated_admin_token_and_key_files_are_private(make_proxy: ProxyFactory) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY_PROXY_ADMIN_TOKEN"}
    proxy = make_proxy({}, env=env)
    token_file = proxy.data_dir / "admin-token"
    key_file = proxy.data_dir.parent / "data.key"
    for path in (token_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert str(token_file) in proxy.log_text()
    token = token_file.read_text().strip()
    assert token not in proxy.log_text()
    assert Admin(proxy.host, token).ok("GET", "/registries") == {"registries": []}


# -- hostile input: every refusal is a 4xx in the documented shape, never a 500 -----------------------------------


def assert_error(reply: Reply, status: int, code: str, message: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    error = reply.json()["error"]
    assert error["code"] == code and message in error["message"], error
    assert set(error) == {"code", "message", "field"}


def test_a_token_that_is_not_latin_1_or_not_utf_8_is_unauthorized(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    # http.client sends a str header as latin-1: the first is "tökén" in latin-1 bytes (not UTF-8), the second
    # its UTF-8 bytes.
    for token in ("tökén", "tökén".encode().decode("latin-1"), admin.token + "\xff"):
        assert_error(admin.call("GET", "/registries", token=token), 401, "unauthorized", "Bearer")
    assert "Traceback" not in proxy.log_text()


def test_http_basic_is_refused_by_the_api_and_taken_by_the_status_page(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    with_basic = {"Authorization": basic("admin", admin.token)}
    refused = call(proxy.host, "GET", "/api/v1/registries", with_basic)
    assert_error(refused, 401, "unauthorized", "Bearer")
    assert refused.headers["www-authenticate"].startswith("Bearer ")
    written = call(proxy.host, "PUT", "/api/v1/settings/registry.whitelist",
                   {**with_basic, "Content-Type": "application/json"}, body=b'{"value": "evil.example"}')
    assert written.status == 401
    assert admin.ok("GET", "/settings/registry.whitelist")["value"] == ""
    assert call(proxy.host, "GET", "/status.json", with_basic).status == 200


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
                         ids=["open", "closed"])
def test_deeply_nested_json_is_invalid(admin_proxy: tuple[ProxyProcess, Admin], raw: bytes) -> None:
    proxy, admin = admin_proxy
    assert_error(admin.call("PUT", "/settings/registry.whitelist", raw=raw), 400, "invalid", "nested too deeply")
    assert "Traceback" not in proxy.log_text()


def test_a_large_body_under_the_limit_is_read_to_its_end(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    whitelist = ", ".join(f"registry-{i}.example.com" for i in range(26_000))
    assert len(whitelist) > 600_000
    assert admin.set("registry.whitelist", whitelist)["value"] == whitelist

    ca_pem = trustme.CA().cert_pem.bytes().decode()
    copies = 700_000 // len(ca_pem) + 1
    reply = admin.call("PATCH", "/upstreams/big-bundle.example", {"ca_cert": ca_pem * copies})
    assert reply.status == 200, reply.body[:300]
    assert len(reply.json()["ca_certificates"]) == copies


def test_a_body_over_the_limit_is_too_large(admin_proxy: tuple[ProxyProcess, Admin]) -> None:
    proxy, admin = admin_proxy
    over = json.dumps({"value": "a" * MAX_BODY}).encode()
    assert_error(admin.call("PUT", "/settings/registry.whitelist", raw=over), 413, "too_large",
                 f"body is larger than {MAX_BODY} bytes")
    # Chunked, so that no Content-Length announces it.
    chunked = call(proxy.host, "PUT", "/api/v1/settings/registry.whitelist",
                   {"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"},
                   body=iter([over[i:i + 65536] for i in range(0, len(over), 65536)]))
    assert_error(chunked, 413, "too_large", f"body is larger than {MAX_BODY} bytes")
    assert admin.ok("GET", "/settings/registry.whitelist")["value"] == ""


HOSTILE_BODIES: list[tuple[str, str, bytes, str]] = [
    ("lone surrogate in a password", "/registries",
     b'{"address": "quay.io", "username": "u", "password": "\\ud800"}', "surrogate"),
    ("lone surrogate in an email", "/registries",
     b'{"address": "quay.io", "username": "u", "password": "p", "email": "\\udfff@example.com"}', "surrogate"),
    ("lone surrogate in an endpoint", "/upstreams/quay.io", b'{"endpoint": "https://\\ud800"}', "surrogate"),
    ("deeply nested json_key", "/registries",
     b'{"address": "gcr.io", "kind": "gcr", "json_key": "' + b"[" * 100_000 + b'"}', "json_key is not valid JSON"),
    ("invalid UTF-8", "/registries", b'{"address": "quay.io\xff"}', "not valid JSON"),
    ("an integer of 5,000 digits", "/registries", b'{"address": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ("a number out of range", "/environments", b'{"name": "x", "anonymous_pull": 1e999}', "must be a boolean"),
]


@pytest.mark.parametrize("name,path,raw,message", HOSTILE_BODIES, ids=[case[0] for case in HOSTILE_BODIES])
def test_hostile_bodies_are_invalid_not_internal_errors(admin_proxy: tuple[ProxyProcess, Admin], name: str,
                                                        path: str, raw: bytes, message: str) -> None:
    proxy, admin = admin_proxy
    method = "PATCH" if path.startswith("/upstreams/") else "POST"
    assert_error(admin.call(method, path, raw=raw), 400, "invalid", message)
    assert admin.registries() == []
    assert "Traceback" not in proxy.log_text()
