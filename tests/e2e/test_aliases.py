"""Registry aliases: a registry with a port, named by a path component clients accept.

`proxy:5000/127.0.0.1:5001/team/app:1` is an invalid reference for every
client (a path component has no `:`); `proxy:5000/<alias>/team/app:1` is
routed as that name would be. Real skopeo, the CLI as an operator runs it,
and Chromium for the status page. podman's and containerd's mirrors are in
their client modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .admin import Admin, new_token
from .daemons import assert_through_proxy, proxy_fetches, proxy_lines
from .http import get
from .images import build_image, push, sha256_digest
from .proxyproc import ProxyFactory
from .test_admin_cli import TOKEN_ENV, Cli
from .test_status_page import browser as browser
from .test_status_page import cells, close, open_page, registry_row
from .tools import skopeo, skopeo_ok
from .upstream import MANIFEST_ACCEPT, Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ALIAS = "local"


def aliased(upstream: Upstream) -> dict[str, Any]:
    """The upstream under its own address, 127.0.0.1:<port>, with the alias ALIAS."""
    return {"registries": [{"address": upstream.host, "endpoint": upstream.url, "alias": ALIAS}]}


def registry_rows(proxy_host: str, token: str) -> dict[str, dict[str, Any]]:
    """The default environment's rows of /status.json, by address."""
    reply = get(proxy_host, "/status.json", Authorization=f"Bearer {token}")
    assert reply.status == 200, reply.body
    default = next(env for env in reply.json()["environments"] if env["name"] == "default")
    return {row["address"]: row for row in default["registries"]}


def test_skopeo_copies_and_inspects_through_an_alias(plain_upstream: Upstream, oci_layout: Path,
                                                     make_proxy: ProxyFactory, tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[50_000, 3_000])
    push(plain_upstream, oci_layout, "1", "team/app")
    proxy = make_proxy(aliased(plain_upstream))
    address = plain_upstream.host

    # Why aliases exist: the address itself is no prefix any client takes.
    refused = skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds",
                     f"docker://{proxy.host}/{address}/team/app:1")
    assert refused.returncode != 0 and "invalid reference format" in refused.stderr, refused.stderr

    raw = skopeo_ok("inspect", "--raw", "--tls-verify=false", "--no-creds",
                    f"docker://{proxy.host}/{ALIAS}/team/app:1", text=False).stdout
    assert raw == image.manifest_bytes
    skopeo_ok("copy", "--quiet", "--src-tls-verify=false", "--src-no-creds",
              f"docker://{proxy.host}/{ALIAS}/team/app:1", f"dir:{tmp_path / 'pulled'}")
    for digest in image.blob_digests:
        assert sha256_digest((tmp_path / "pulled" / digest.split(":")[1]).read_bytes()) == digest
    # The access log has the path the client sent and the registry it went to.
    assert_through_proxy(proxy, plain_upstream, image, "team/app", "1", proxy_repo=f"{ALIAS}/team/app",
                         registry=address)

    # The alias, the address and containerd's ?ns=host:port are one registry and one cache.
    digest = image.manifest_digest
    for path in (f"/v2/{address}/team/app/manifests/{digest}", f"/v2/team/app/manifests/{digest}?ns={address}",
                 f"/v2/{ALIAS}/team/app/manifests/{digest}?ns={address}"):
        reply = get(proxy.host, path, Accept=MANIFEST_ACCEPT)
        assert reply.status == 200 and reply.body == image.manifest_bytes, (path, reply.body)
        assert reply.headers["x-registry-proxy-cache"] == "hit", path
    assert [p for p in proxy_fetches(plain_upstream, "team/app") if "/manifests/" in p] == ["/v2/team/app/manifests/1"]


def test_tag_list_pages_through_an_alias_link_back_to_the_alias(plain_upstream: Upstream, oci_layout: Path,
                                                                 make_proxy: ProxyFactory) -> None:
    tags = ["1", "a", "b", "c"]
    for tag in tags:
        build_image(oci_layout, tag)
        push(plain_upstream, oci_layout, tag, "team/app")
    proxy = make_proxy(aliased(plain_upstream))

    seen: list[str] = []
    path: str | None = f"/v2/{ALIAS}/team/app/tags/list?n=3"
    while path is not None:
        reply = get(proxy.host, path)
        assert reply.status == 200, reply.body
        assert reply.json()["name"] == f"{ALIAS}/team/app"
        seen += reply.json()["tags"]
        link = reply.headers.get("link")
        path = None
        if link is not None:
            assert link.startswith(f"</v2/{ALIAS}/team/app/tags/list?") and link.endswith('>; rel="next"'), link
            path = link[1:link.index(">")]
    assert seen == tags


def test_an_alias_set_with_the_cli_routes_the_next_pull_and_shows_on_the_status_page(
        browser: Browser, plain_upstream: Upstream, make_upstream: Any, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "team/app")
    hub = make_upstream("hub")
    address = plain_upstream.host
    token = new_token()
    # Docker Hub is played by another registry, and quay.io is named by the file.
    proxy = make_proxy({"registries": [{"address": "docker.io", "endpoint": hub.url},
                                       {"address": "quay.io", "endpoint": hub.url, "alias": "quay"}]},
                       env={TOKEN_ENV: token})
    cli, admin = Cli(proxy, token, tmp_path), Admin(proxy.host, token)
    # Before: `local/team/app` is a Docker Hub name.
    assert get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/1").status == 404

    shown = cli.fields("upstreams", "set", address, "--endpoint", plain_upstream.url, "--alias", ALIAS)
    assert (shown["alias"], shown["endpoint"], shown["source"]) == (ALIAS, plain_upstream.url, "api")
    assert {row["ADDRESS"]: row["ALIAS"] for row in cli.table("upstreams", "list")} == {
        address: ALIAS, "docker.io": "-", "quay.io": "quay"}
    reply = get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/1", Accept=MANIFEST_ACCEPT)
    assert reply.status == 200 and reply.body == image.manifest_bytes

    # One registry per alias; the file's registries stay the file's; the grammar is the distribution's.
    assert cli.fail("upstreams", "set", "other.example:5000", "--alias", "quay") == (
        "registry-proxy: alias quay already names quay.io: an alias names one registry (field: alias)")
    for body, status in (({"alias": ALIAS}, 409), ({"alias": "a.b"}, 400), ({"alias": "library"}, 400),
                         ({"alias": "Upper"}, 400), ({"alias": 5}, 400)):
        refused = admin.call("PATCH", "/upstreams/other.example:5000", body)
        assert (refused.status, refused.json()["error"]["field"]) == (status, "alias"), (body, refused.body)
    config_managed = admin.call("PATCH", "/upstreams/quay.io", {"alias": "q"})
    assert (config_managed.status, config_managed.json()["error"]["field"]) == (409, "address")
    assert admin.ok("GET", "/upstreams/other.example:5000")["alias"] is None

    # Next to the address on the status page and in /status.json.
    rows = registry_rows(proxy.host, token)
    assert (rows[address]["alias"], rows["quay.io"]["alias"], rows["docker.io"]["alias"]) == (ALIAS, "quay", None)
    page, response = open_page(browser, proxy.url + "/", token=token)
    assert response.status == 200
    assert cells(registry_row(page, address))[0] == f"{address} alias {ALIAS} anonymous · {plain_upstream.url}"
    assert cells(registry_row(page, "quay.io"))[0] == f"quay.io alias quay anonymous · {hub.url}"
    assert cells(registry_row(page, "docker.io"))[0] == f"docker.io anonymous · {hub.url}"
    close(page)

    # It outlives a restart; dropped, the name is Docker Hub's again.
    proxy.restart()
    assert json.loads(cli.ok("upstreams", "show", address, "--json"))["alias"] == ALIAS
    assert cli.fields("upstreams", "set", address, "--no-alias")["alias"] == "-"
    assert get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/2").status == 404
    assert any(" registry=docker.io " in line for line in proxy_lines(proxy, f"/v2/{ALIAS}/team/app/manifests/2"))
    assert registry_rows(proxy.host, token)[address]["alias"] is None


def test_a_denied_registry_is_named_with_the_alias_the_client_used(plain_upstream: Upstream,
                                                                   make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({**aliased(plain_upstream), "settings": {"registry.whitelist": "quay.io"}})
    denied = get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/1")
    assert denied.status == 403 and denied.error_codes == ["DENIED"]
    assert denied.error_message == f"registry {plain_upstream.host} (alias {ALIAS}) is not in registry.whitelist"


def test_an_alias_in_the_file_wins_over_the_same_alias_set_through_the_api(
        plain_upstream: Upstream, make_upstream: Any, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "team/app")
    other = make_upstream("other")
    other_image = build_image(oci_layout, "1")
    push(other, oci_layout, "1", "team/app")
    token = new_token()
    proxy = make_proxy({}, env={TOKEN_ENV: token})
    admin = Admin(proxy.host, token)
    admin.ok("PATCH", f"/upstreams/{other.host}", {"endpoint": other.url, "alias": ALIAS})
    assert get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/1").body == other_image.manifest_bytes

    proxy.stop()
    proxy.config_path.write_text(yaml.safe_dump({**proxy.config, **aliased(plain_upstream)}))
    proxy.start()
    assert get(proxy.host, f"/v2/{ALIAS}/team/app/manifests/1").body == image.manifest_bytes
    # Said once, though every admin change rebuilds the aliases.
    admin.ok("PATCH", f"/upstreams/{other.host}", {"insecure": False})
    warning = (f"alias {ALIAS} of {other.host} (set through the API) is not used: the config file gives it to "
               f"{plain_upstream.host}")
    assert proxy.log_text().count(warning) == 1, proxy.log_text()[-3000:]
    rows = registry_rows(proxy.host, token)
    assert (rows[plain_upstream.host]["alias"], rows[other.host]["alias"]) == (ALIAS, None)
