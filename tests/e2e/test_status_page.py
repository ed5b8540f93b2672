"""The status page in a real browser: headless Chromium (Debian's) driven by Playwright.

Playwright never downloads a browser here: it drives /usr/bin/chromium. The
screenshots land in test-artifacts/ (gitignored); with UPDATE_DOCS_SCREENSHOT=1
the realistic one also replaces docs/status-page.png.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .admin import new_token
from .cloud import AWS_ISOLATION, ECR, FakeEcr
from .http import get
from .images import ImageInfo, build_image, push
from .proxyproc import REPO_ROOT, ProxyFactory, ProxyProcess
from .tokenserver import TokenServer
from .tools import free_port, require_binary, skopeo_ok
from .upstream import MANIFEST_ACCEPT, Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Response

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "status-page.png"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_path = require_binary("chromium")  # /usr/bin/chromium, from Debian's package
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "the playwright Python package is not installed (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Browser, url: str, *, token: str | None = None, viewport: dict[str, int] = DESKTOP,
              mobile: bool = False) -> tuple[Page, Response]:
    """A fresh browser profile on `url`; with `token`, logged in as a person would at the prompt.

    Returns the page and the document's response. Chromium cancels a
    navigation that ends in a Basic challenge it has no (right) answer to
    (net::ERR_INVALID_AUTH_CREDENTIALS), so the response is the one the
    browser saw, not goto's return value.
    """
    from playwright.sync_api import Error

    options: dict[str, Any] = {"viewport": viewport, "is_mobile": mobile, "has_touch": mobile}
    if token is not None:
        options["http_credentials"] = {"username": "admin", "password": token}
    context = browser.new_context(**options)
    page = context.new_page()
    seen: list[Response] = []
    page.on("response", lambda response: seen.append(response) if response.url == url else None)
    try:
        page.goto(url)
    except Error as exc:
        if "ERR_INVALID_AUTH_CREDENTIALS" not in exc.message:
            raise
    assert seen, f"no response for {url}"
    return page, seen[-1]


def close(page: Page) -> None:
    page.context.close()


def stat(page: Page, label: str) -> str:
    """The big number of one tile in the cache section, e.g. stat(page, "blobs") -> "3"."""
    tile = page.locator("#cache .stat").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\b"))
    return tile.locator("b").inner_text().strip()


def registry_row(page: Page, address: str) -> Locator:
    name = page.locator("td b", has_text=re.compile(rf"^{re.escape(address)}$"))
    row = page.locator("#registries-default .registries tr").filter(has=name)
    assert row.count() == 1, f"{address} is not one row of the registries table"
    return row


def cells(row: Locator) -> list[str]:
    return [" ".join(text.split()) for text in row.locator("td").all_inner_texts()]


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def pull_with_skopeo(proxy: ProxyProcess, ref: str, dest: Path) -> None:
    skopeo_ok("copy", "--quiet", "--src-tls-verify=false", "--src-no-creds", f"docker://{proxy.host}/{ref}",
              f"dir:{dest}")


def kib(image: ImageInfo) -> str:
    total = len(image.manifest_bytes) + len(image.config_bytes) + sum(size for _, size in image.layers)
    return f"{total / 1024:.1f} KiB"


def test_status_page_needs_the_token_and_shows_registries_and_cache(browser: Browser, plain_upstream: Upstream,
                                                                    oci_layout: Path, make_proxy: ProxyFactory,
                                                                    tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[60_000, 4_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    pull_with_skopeo(proxy, "quay.io/org/app:1", tmp_path / "pulled")

    page, response = open_page(browser, proxy.url + "/")
    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Basic realm="registry-proxy status"'
    close(page)
    page, response = open_page(browser, proxy.url + "/", token=new_token())
    assert response.status == 401
    close(page)

    page, response = open_page(browser, proxy.url + "/", token=token)
    assert response.status == 200 and page.title() == "registry-proxy status"
    address, credential, minted, upstream, errors = cells(registry_row(page, "quay.io"))
    assert address == f"quay.io anonymous · {plain_upstream.url}"
    assert credential == "anonymous" and minted == "–" and errors == "none"
    assert re.fullmatch(r"200 \d+(\.\d)? ms, \d+ s ago", upstream), upstream
    assert cells(registry_row(page, "docker.io"))[3] == "not contacted yet"
    # What skopeo pulled: one manifest, the config and two layers.
    assert (stat(page, "blobs"), stat(page, "manifests")) == ("3", "1")
    assert stat(page, "used") == kib(image)
    assert "of 20.0 GiB" in page.locator("#cache .stat", has_text="used").inner_text()
    assert stat(page, "evictions") == "0" and stat(page, "stale serves") == "0"
    assert page.locator("#settings tr", has_text="registry.default").inner_text().split("\t")[1] == "docker.io"
    screenshot(page, "status-page-desktop.png")
    close(page)

    # A phone: the page itself never scrolls sideways; wide tables scroll inside their box.
    page, response = open_page(browser, proxy.url + "/", token=token, viewport=PHONE, mobile=True)
    assert response.status == 200
    widths = page.evaluate("""() => ({
        viewport: window.innerWidth,
        document: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        overflowing: [...document.querySelectorAll('header, main, section, .grid, .stat')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5).map(e => e.outerHTML.slice(0, 80)),
    })""")
    assert widths["viewport"] == PHONE["width"], widths
    assert widths["document"] <= PHONE["width"] and widths["body"] <= PHONE["width"], widths
    assert widths["overflowing"] == [], widths
    table_box = page.locator("#registries-default .table.registries")
    assert table_box.evaluate("e => e.scrollWidth > e.clientWidth && getComputedStyle(e).overflowX === 'auto'")
    assert page.locator("body").evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 14
    assert stat(page, "used") == kib(image)
    screenshot(page, "status-page-phone.png")
    close(page)


def test_public_status_page_shows_the_numbers_of_status_json(browser: Browser, plain_upstream: Upstream,
                                                             oci_layout: Path, make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[30_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy({"status": {"public": True}, "registries": [{"address": "quay.io",
                                                                      "endpoint": plain_upstream.url}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": new_token()})
    path = "/v2/quay.io/org/app"
    for _ in range(2):  # one cold, one warm pull: misses, then hits
        assert get(proxy.host, f"{path}/manifests/1", Accept=MANIFEST_ACCEPT).status == 200
        for digest in image.blob_digests:
            assert get(proxy.host, f"{path}/blobs/{digest}").status == 200
    assert get(proxy.host, f"{path}/manifests/missing", Accept=MANIFEST_ACCEPT).status == 404

    page, response = open_page(browser, proxy.url + "/")
    assert response.status == 200
    data = get(proxy.host, "/status.json").json()
    cache = data["cache"]
    assert (cache["blobs"], cache["manifests"], cache["hits"], cache["misses"]) == (2, 1, 3, 3)
    assert stat(page, "blobs") == str(cache["blobs"])
    assert stat(page, "manifests") == str(cache["manifests"])
    assert stat(page, "used") == kib(image) == f"{cache['used_bytes'] / 1024:.1f} KiB"
    assert stat(page, "hit ratio") == f"{cache['hit_ratio'] * 100:.0f}%" == "50%"
    hit_tile = page.locator("#cache .stat", has_text="hit ratio").inner_text()
    assert f"{cache['hits']} hits, {cache['misses']} misses" in hit_tile
    assert stat(page, "stale serves") == str(cache["stale_serves"]) == "0"
    [quay] = [r for r in data["environments"][0]["registries"] if r["address"] == "quay.io"]
    # The unknown tag's 404 is the last upstream answer.
    assert quay["last_status"] == 404
    assert cells(registry_row(page, "quay.io"))[3].startswith(f"{quay['last_status']} {quay['last_latency_ms']} ms")
    assert data["version"] in page.locator("header").inner_text()
    close(page)


def test_status_page_says_not_ready_with_the_failed_check(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"status": {"public": True}, "cache": {"min_free": "1000TiB"}})
    assert get(proxy.host, "/readyz").status == 503
    page = get(proxy.host, "/").body.decode()
    assert ">not ready<" in page and ">ready<" not in page
    assert "free_space" in page and "below cache.min_free" in page
    status = get(proxy.host, "/status.json").json()
    assert status["ready"] is False and status["checks"]["free_space"].startswith("failed")
    ok = make_proxy({"status": {"public": True}}, name="ok")
    assert ">ready<" in get(ok.host, "/").body.decode()


def test_registries_named_only_by_clients_do_not_grow_the_status_page(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"status": {"public": True}})
    for i in range(40):
        assert get(proxy.host, f"/v2/127.0.{i}.1/app/manifests/latest").status == 403
    rows = get(proxy.host, "/status.json").json()["environments"][0]["registries"]
    assert len(rows) < 10, [row["address"] for row in rows]


# -- a realistic page: a few registries, one of them ECR, some cache hits, one failing ------------------------


def test_realistic_status_page(browser: Browser, plain_upstream: Upstream, htpasswd_upstream: Upstream,
                               token_upstream: Upstream, token_server: TokenServer, oci_layout: Path,
                               make_proxy: ProxyFactory, tmp_path: Path) -> None:
    app = build_image(oci_layout, "1.4", layer_sizes=[900_000, 250_000, 40_000])
    push(plain_upstream, oci_layout, "1.4", "acme/app")
    internal = build_image(oci_layout, "2024.06", layer_sizes=[180_000])
    push(htpasswd_upstream, oci_layout, "2024.06", "team/tool")
    worker = build_image(oci_layout, "v7", layer_sizes=[420_000, 12_000])
    push(token_upstream, oci_layout, "v7", "private/worker")
    fake = FakeEcr(lambda password, _expires: token_server.set_login("AWS", password), lifetime=12 * 3600)
    try:
        [(alice, alice_pw)] = htpasswd_upstream.users.items()
        token = new_token()
        proxy = make_proxy({
            "settings": {"registry.whitelist": "quay.io,registry.acme.internal,ghcr.io,docker.io," + ECR},
            "registries": [
                {"address": "quay.io", "endpoint": plain_upstream.url},
                {"address": "registry.acme.internal", "endpoint": htpasswd_upstream.url, "username": alice,
                 "password": alice_pw},
                {"address": ECR, "endpoint": token_upstream.url, "token_realms": token_upstream.token_realms,
                 "kind": "ecr", "access_key_id": fake.access_key_id, "secret_access_key": "secret-" + new_token(),
                 "aws_endpoint_url": fake.url},
                # Nothing listens there: the page shows what an outage looks like.
                {"address": "ghcr.io", "endpoint": f"http://127.0.0.1:{free_port()}"},
            ]}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
        for ref in ("quay.io/acme/app:1.4", "quay.io/acme/app:1.4", "registry.acme.internal/team/tool:2024.06",
                    f"{ECR}/private/worker:v7", f"{ECR}/private/worker:v7", "quay.io/acme/app:1.4"):
            pull_with_skopeo(proxy, ref, tmp_path / f"pull-{time.monotonic_ns()}")
        for _ in range(2):
            failed = get(proxy.host, "/v2/ghcr.io/acme/app/manifests/1.4", Accept=MANIFEST_ACCEPT)
            assert failed.status == 503, failed.body

        page, response = open_page(browser, proxy.url + "/", token=token)
        assert response.status == 200
        ecr = cells(registry_row(page, ECR))
        assert ecr[0] == f"{ECR} ecr · {token_upstream.url}"
        assert re.fullmatch(r"active #\d+ AWS", ecr[1]), ecr[1]
        # Minted just now for 12 h: renewal is planned with a quarter to an eighth left, 9 to 10.5 h from now.
        assert re.fullmatch(r"expires in 11 h 59 min minted \d+ s ago, renews in (8 h 59|9 h \d+|10 h ([0-2]\d|30)) "
                            r"min last refresh: ok", ecr[2]), ecr[2]
        assert ecr[3].startswith("200 ")
        acme = cells(registry_row(page, "registry.acme.internal"))
        assert re.fullmatch(rf"active #\d+ {alice}", acme[1]), acme[1]
        ghcr = cells(registry_row(page, "ghcr.io"))
        assert re.search(r"\d+ s ago( · \d+×)? registry ghcr\.io .* is unreachable", ghcr[4]), ghcr[4]
        images = (app, internal, worker)
        assert stat(page, "blobs") == str(sum(len(i.blob_digests) for i in images))
        assert stat(page, "manifests") == "3"
        assert stat(page, "used").endswith(" MiB")
        assert stat(page, "hit ratio") != "–"
        path = screenshot(page, "status-page-realistic.png")
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            DOCS_SCREENSHOT.write_bytes(path.read_bytes())
            assert DOCS_SCREENSHOT.stat().st_size <= 300 * 1024, DOCS_SCREENSHOT.stat().st_size
        close(page)
        # No secret on the page that is meant to be shown around.
        html = get(proxy.host, "/", Authorization="Basic " + base64.b64encode(f"x:{token}".encode()).decode())
        assert alice_pw not in html.body.decode() and token not in html.body.decode()
    finally:
        fake.stop()


# -- what the page says about a registry is what the proxy knows --------------------------------------------------


def upstream_cell(page: Page, address: str) -> Locator:
    return registry_row(page, address).locator("td.upstream")


def test_a_failing_registry_shows_the_failure_and_a_blocked_one_the_policy(browser: Browser, plain_upstream: Upstream,
                                                                           oci_layout: Path,
                                                                           make_proxy: ProxyFactory) -> None:
    build_image(oci_layout, "1", layer_sizes=[20_000])
    push(plain_upstream, oci_layout, "1", "acme/app")
    down = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy({
        "status": {"public": True},
        # 10.255.0.1 is whitelisted but configured nowhere: the SSRF guard keeps the proxy from it.
        "settings": {"registry.whitelist": "quay.io, ghcr.io, docker.io, 10.255.0.1"},
        "registries": [{"address": "quay.io", "endpoint": plain_upstream.url},
                       {"address": "ghcr.io", "endpoint": down},
                       {"address": "outside.example", "endpoint": plain_upstream.url}]})
    assert get(proxy.host, "/v2/quay.io/acme/app/manifests/1", Accept=MANIFEST_ACCEPT).status == 200
    plain_upstream.stop()
    assert get(proxy.host, "/v2/quay.io/acme/app/manifests/2", Accept=MANIFEST_ACCEPT).status == 503
    assert get(proxy.host, "/v2/ghcr.io/acme/app/manifests/1", Accept=MANIFEST_ACCEPT).status == 503
    assert get(proxy.host, "/v2/outside.example/acme/app/manifests/1", Accept=MANIFEST_ACCEPT).status == 403
    assert get(proxy.host, "/v2/10.255.0.1/acme/app/manifests/1", Accept=MANIFEST_ACCEPT).status == 403

    page, response = open_page(browser, proxy.url + "/")
    assert response.status == 200
    quay = upstream_cell(page, "quay.io")
    # Its last answer was a 200, but its last contact failed: no green 200.
    assert quay.locator(".pill").inner_text() == "failing" and "bad" in quay.locator(".pill").get_attribute("class")
    assert re.fullmatch(rf"failing \d+ s ago: registry quay\.io \({re.escape(plain_upstream.url)}\) is unreachable: "
                        r".+ last success: 200, \d+(\.\d)? ms, \d+ s ago", " ".join(quay.inner_text().split())), \
        quay.inner_text()
    ghcr = " ".join(upstream_cell(page, "ghcr.io").inner_text().split())
    assert re.fullmatch(rf"failing \d+ s ago: registry ghcr\.io \({re.escape(down)}\) is unreachable: .+ no success yet",
                        ghcr), ghcr
    for address, policy in (("outside.example", "registry.whitelist"), ("10.255.0.1", "SSRF guard")):
        cell = upstream_cell(page, address)
        assert cell.locator(".pill").inner_text() == "blocked by policy"
        assert re.fullmatch(rf"blocked by policy {policy}, \d+ s ago", " ".join(cell.inner_text().split())), \
            cell.inner_text()
        assert cells(registry_row(page, address))[4] == "none"  # never contacted: nothing failed
    close(page)

    rows = {r["address"]: r for r in get(proxy.host, "/status.json").json()["environments"][0]["registries"]}
    assert rows["quay.io"]["contact"] == "failing" and rows["quay.io"]["last_success"]["status"] == 200
    assert rows["quay.io"]["last_error"].startswith("registry quay.io (")
    assert rows["outside.example"]["contact"] == "blocked"
    assert rows["outside.example"]["blocked"]["policy"] == "registry.whitelist"
    assert rows["10.255.0.1"]["blocked"]["policy"] == "SSRF guard" and rows["10.255.0.1"]["errors"] == []


# -- docs/observability.md describes the page there is -----------------------------------------------------------

OBSERVABILITY = REPO_ROOT / "docs" / "observability.md"


def documented_outline() -> list[tuple[str, list[str]]]:
    """The marked table of docs/observability.md: (section, its tiles or columns in order)."""
    text = OBSERVABILITY.read_text()
    block = re.search(r"<!-- status-page-outline: [^>]*-->\n(.*?)<!-- /status-page-outline -->", text, re.S)
    assert block, "docs/observability.md has no status-page-outline block"
    outline = []
    for line in block[1].splitlines()[2:]:
        section, items = (cell.strip() for cell in line.strip("|").split("|"))
        section = section.split(" (", 1)[0]
        outline.append((section, [] if items == "–" else [i.strip() for i in re.split(r"[,;]", items)]))
    return outline


def title_pattern(documented: str) -> str:
    """A documented title as a pattern: "Environment *name*" matches "Environment default"."""
    return re.escape(documented).replace(re.escape("*name*"), r"\S+")


def test_the_page_has_what_docs_observability_md_lists(browser: Browser, make_proxy: ProxyFactory) -> None:
    # Not ready (min_free cannot be met), so that every section the doc lists is on the page.
    proxy = make_proxy({"status": {"public": True}, "cache": {"min_free": "1000TiB"},
                        "environments": [{"name": "team-a", "anonymous_pull": False}]})
    page, response = open_page(browser, proxy.url + "/")
    assert response.status == 200
    shown = page.evaluate("""() => [...document.querySelectorAll('main > section')].map(s => ({
        title: s.querySelector('h2').textContent.trim(),
        items: [...s.querySelectorAll('.stat, th')].map(e =>
            (e.matches('.stat') ? e.firstChild.textContent : e.textContent).trim()),
    }))""")
    close(page)
    documented = documented_outline()
    unmatched = []
    for section in shown:
        matches = [items for title, items in documented if re.fullmatch(title_pattern(title), section["title"])]
        if matches != [section["items"]]:
            unmatched.append((section["title"], section["items"], matches))
    assert unmatched == [], f"the page shows what docs/observability.md does not list: {unmatched}"
    titles = [section["title"] for section in shown]
    for title, _ in documented:
        assert any(re.fullmatch(title_pattern(title), shown_title) for shown_title in titles), \
            f"docs/observability.md lists {title!r}, which the page does not show: {titles}"
    # Both environments have their section.
    assert {"Environment default", "Environment team-a"} <= set(titles)
