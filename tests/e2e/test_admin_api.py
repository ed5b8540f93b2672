"""The admin API itself: input checks, write-only secrets, durability, config-managed entries."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from .admin import Admin, new_token
from .http import call
from .proxyproc import ProxyFactory, ProxyProcess

PASSWORD = "pa55-Wr1te-0nly-" + new_token()


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
