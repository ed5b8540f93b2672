"""Environments and pull keys declared in the config file (GitOps): the file decides, the API may not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

from .admin import Admin, new_token
from .http import basic, get
from .images import build_image, push
from .proxyproc import ProxyFactory
from .tokenserver import TokenServer
from .upstream import MANIFEST_ACCEPT, Upstream

REGISTRY = "registry.example.com"
PATH = f"/v2/{REGISTRY}/private/app/manifests/1"
FIRST, SECOND = "first-secret-from-a-file-0001", "second-secret-from-a-file-0002"


def test_a_key_from_the_config_file_pulls_with_its_environments_credential(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    secret_file = tmp_path / "ci.key"
    secret_file.write_text(FIRST + "\n")
    user, password = next(iter(token_server.users.items()))
    token = new_token()
    proxy = make_proxy({
        "environments": [{"name": "default", "anonymous_pull": False},
                         {"name": "team-a", "keys": [{"id": "team-a-ci", "secret_file": str(secret_file)}]}],
        "registries": [{"address": REGISTRY, "endpoint": token_upstream.url,
                        "token_realms": token_upstream.token_realms, "environment": "team-a",
                        "username": user, "password": password}],
    }, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)

    pulled = get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=basic("team-a-ci", FIRST))
    assert pulled.status == 200 and pulled.body == image.manifest_bytes
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT).status == 401  # default admits no one anonymously
    # Only a hash is stored.
    rows = sqlite3.connect(proxy.data_dir / "state.db").execute("SELECT id, hash, source FROM pull_keys").fetchall()
    assert [(key_id, source) for key_id, _, source in rows] == [("team-a-ci", "config")]
    assert FIRST not in rows[0][1] and rows[0][1].startswith("scrypt$")

    # The file decides: the API refuses to change what it declares.
    for method, path, body in (("DELETE", "/environments/team-a/keys/team-a-ci", None),
                               ("PATCH", "/environments/team-a", {"anonymous_pull": True}),
                               ("DELETE", "/environments/team-a?force=true", None)):
        reply = admin.call(method, path, body)
        assert reply.status == 409 and reply.json()["error"]["code"] == "conflict", (method, path, reply.body)
    [listed] = admin.ok("GET", "/environments/team-a/keys")["keys"]
    assert listed["source"] == "config" and "secret" not in listed

    # A restart keeps the key, with when it was made and last used.
    old_token = get(proxy.host, "/auth/token", Authorization=basic("team-a-ci", FIRST)).json()["token"]
    proxy.restart()
    [kept] = admin.ok("GET", "/environments/team-a/keys")["keys"]
    assert (kept["created"], kept["last_used"]) == (listed["created"], listed["last_used"]) and kept["last_used"]
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=f"Bearer {old_token}").status == 200

    # A new secret in the file replaces the old one at the next start, and ends its tokens.
    secret_file.write_text(SECOND + "\n")
    proxy.restart()
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=basic("team-a-ci", FIRST)).status == 401
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=f"Bearer {old_token}").status == 401
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=basic("team-a-ci", SECOND)).status == 200

    # Left out of the file, the environment goes back to the API's hands, without the file's key.
    config = yaml.safe_load(proxy.config_path.read_text())
    config["environments"] = [{"name": "default", "anonymous_pull": False}]
    config["registries"] = [{"address": REGISTRY, "endpoint": token_upstream.url, "token_realms": token_upstream.token_realms}]
    proxy.config_path.write_text(yaml.safe_dump(config))
    proxy.restart()
    assert get(proxy.host, PATH, Accept=MANIFEST_ACCEPT, Authorization=basic("team-a-ci", SECOND)).status == 401
    team_a = admin.ok("GET", "/environments/team-a")
    assert (team_a["source"], team_a["keys"], team_a["registries"]) == ("api", 0, 0)
    assert admin.call("DELETE", "/environments/team-a").status == 204
