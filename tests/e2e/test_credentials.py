"""Registry credentials managed at run time, against real upstreams."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .admin import Admin, new_token
from .http import get
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .tokenserver import TokenServer
from .upstream import Upstream

UpstreamFactory = Callable[..., Upstream]


def start(make_proxy: ProxyFactory, upstream: Upstream, **config: object) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    registries = [{"address": "registry.example.com", "endpoint": upstream.url, "token_realms": upstream.token_realms}]
    proxy = make_proxy({"registries": registries, **config}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    return proxy, Admin(proxy.host, token)


def test_newest_active_credential_wins(make_upstream: UpstreamFactory, oci_layout: Path,
                                       make_proxy: ProxyFactory) -> None:
    users = {"alice": secrets.token_hex(8), "carol": secrets.token_hex(8)}
    upstream = make_upstream("htpasswd", auth="htpasswd", users=users)
    build_image(oci_layout, "1")
    push(upstream, oci_layout, "1", "team/tool")
    proxy, admin = start(make_proxy, upstream)
    path = "/v2/registry.example.com/team/tool/manifests/1"

    wrong = admin.add("registry.example.com", "alice", "not-the-password")
    assert get(proxy.host, path).status == 401
    right = admin.add("registry.example.com", "carol", users["carol"])
    assert get(proxy.host, path).status == 200
    listed = {r["id"]: r for r in admin.registries()}
    assert listed[right["id"]]["in_use"] and not listed[wrong["id"]]["in_use"]

    # A newer credential is used even if it is wrong, and cached content is
    # revalidated with it rather than served.
    newest = admin.add("registry.example.com", "alice", "also-wrong")
    reply = get(proxy.host, path)
    assert reply.status == 401 and reply.error_codes == ["UNAUTHORIZED"]
    assert admin.call("DELETE", f"/registries/{newest['id']}").status == 204
    assert get(proxy.host, path).status == 200
    assert admin.call("GET", f"/registries/{newest['id']}").status == 404


def test_deactivate_stops_private_pulls_at_once_and_activate_restores(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[20_000])
    push(token_upstream, oci_layout, "1", "private/app")
    push(token_upstream, oci_layout, "1", "public/app")
    proxy, admin = start(make_proxy, token_upstream)
    user, password = next(iter(token_server.users.items()))
    cred = admin.add("registry.example.com", user, password)
    private = "/v2/registry.example.com/private/app"
    public = "/v2/registry.example.com/public/app"
    layer = image.layers[0][0]
    for base in (private, public):
        assert get(proxy.host, f"{base}/manifests/1").status == 200
        assert get(proxy.host, f"{base}/blobs/{layer}").status == 200

    deactivated = admin.ok("POST", f"/registries/{cred['id']}/deactivate")
    assert deactivated["state"] == "inactive" and not deactivated["in_use"]
    for what in (f"{private}/manifests/1", f"{private}/manifests/{image.manifest_digest}", f"{private}/blobs/{layer}"):
        reply = get(proxy.host, what)
        assert reply.status == 401, (what, reply.status)
        assert reply.error_codes == ["UNAUTHORIZED"]
        assert "deactivated" in reply.error_message
    # Public content still works anonymously, from the cache once revalidated.
    assert get(proxy.host, f"{public}/manifests/1").status == 200
    assert get(proxy.host, f"{public}/blobs/{layer}").status == 200

    assert admin.ok("POST", f"/registries/{cred['id']}/activate")["in_use"]
    assert get(proxy.host, f"{private}/blobs/{layer}").status == 200
    assert get(proxy.host, f"{private}/manifests/1").body == image.manifest_bytes


def test_delete_removes_the_secret_from_the_store(htpasswd_upstream: Upstream, make_proxy: ProxyFactory) -> None:
    proxy, admin = start(make_proxy, htpasswd_upstream)
    cred = admin.add("registry.example.com", "alice", "a-secret-to-forget")
    db = proxy.data_dir / "state.db"
    with sqlite3.connect(db) as conn:
        sealed = conn.execute("SELECT secret FROM registries WHERE id = ?", (cred["id"],)).fetchone()[0]
    assert len(sealed) > 16
    assert admin.call("DELETE", f"/registries/{cred['id']}").status == 204
    for path in proxy.data_dir.glob("state.db*"):
        data = path.read_bytes()
        assert sealed not in data and b"a-secret-to-forget" not in data, path.name


def test_edits_keep_the_address_and_need_the_password(htpasswd_upstream: Upstream, make_proxy: ProxyFactory) -> None:
    proxy, admin = start(make_proxy, htpasswd_upstream)
    cred = admin.add("registry.example.com", "alice", "pw-one")
    moved = admin.call("PATCH", f"/registries/{cred['id']}", {"address": "other.example.com", "password": "pw"})
    assert moved.status == 400 and moved.json()["error"]["field"] == "address"
    assert "delete" in moved.json()["error"]["message"]
    no_password = admin.call("PATCH", f"/registries/{cred['id']}", {"username": "bob"})
    assert no_password.status == 400 and no_password.json()["error"]["field"] == "password"
    edited = admin.ok("PATCH", f"/registries/{cred['id']}", {"username": "bob", "email": "bob@example.com",
                                                              "password": "pw-two"})
    assert (edited["username"], edited["email"], edited["address"]) == ("bob", "bob@example.com",
                                                                        "registry.example.com")
    same_address = admin.call("PATCH", f"/registries/{cred['id']}",
                              {"address": "registry.example.com", "password": "pw-three"})
    assert same_address.status == 200


def test_settings_apply_to_the_next_pull_and_survive_restarts(make_upstream: UpstreamFactory, oci_layout: Path,
                                                              make_proxy: ProxyFactory) -> None:
    quay, hub = make_upstream("quay"), make_upstream("hub")
    quay_image = build_image(oci_layout, "1", layer_sizes=[1000])
    push(quay, oci_layout, "1", "tool")
    hub_image = build_image(oci_layout, "2", layer_sizes=[2000])
    push(hub, oci_layout, "2", "library/tool")
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": quay.url},
                                       {"address": "docker.io", "endpoint": hub.url}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)
    assert get(proxy.host, "/v2/tool/manifests/2").body == hub_image.manifest_bytes

    assert admin.set("registry.default", "quay.io")["source"] == "api"
    assert get(proxy.host, "/v2/tool/manifests/1").body == quay_image.manifest_bytes
    assert get(proxy.host, "/v2/tool/manifests/2").status == 404  # never Docker Hub's cached copy

    warned = admin.set("registry.whitelist", "index.docker.io")
    assert any("quay.io" in w for w in warned["warnings"])
    denied = get(proxy.host, "/v2/tool/manifests/1")
    assert denied.status == 403 and "registry.whitelist" in denied.error_message
    assert get(proxy.host, "/v2/docker.io/library/tool/manifests/2").status == 200
    admin.set("registry.whitelist", "quay.io")
    assert get(proxy.host, "/v2/docker.io/library/tool/manifests/2").status == 403
    assert get(proxy.host, "/v2/tool/manifests/1").status == 200

    cred = admin.add("quay.io", "someone", "kept-across-restarts")
    proxy.restart()
    after = Admin(proxy.host, token)
    assert [r["id"] for r in after.registries()] == [cred["id"]]
    settings = {s["name"]: s for s in after.ok("GET", "/settings")["settings"]}
    assert settings["registry.default"]["value"] == "quay.io"
    assert settings["registry.whitelist"] == {**settings["registry.whitelist"], "value": "quay.io", "source": "api"}
    assert get(proxy.host, "/v2/tool/manifests/1").status == 200
