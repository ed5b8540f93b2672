"""`registry-proxy cache verify` against a live proxy: a blob corrupted on disk is set aside and fetched again."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .admin import new_token
from .http import get
from .images import build_image, push
from .proxyproc import ProxyFactory
from .scrape import scrape
from .test_admin_cli import TOKEN_ENV, Cli, parse_fields
from .upstream import MANIFEST_ACCEPT, Upstream


def test_cache_verify_sets_a_corrupt_blob_aside_and_the_next_get_fetches_it_again(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[512 * 1024, 64 * 1024])
    push(plain_upstream, oci_layout, "1", "org/app")
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]},
                       env={TOKEN_ENV: token})
    cli = Cli(proxy, token, tmp_path)
    repo = "quay.io/org/app"
    assert get(proxy.host, f"/v2/{repo}/manifests/1", Accept=MANIFEST_ACCEPT).status == 200
    for digest in image.blob_digests:
        assert get(proxy.host, f"/v2/{repo}/blobs/{digest}").status == 200
    objects = len(image.blob_digests) + 1

    clean = parse_fields(cli.ok("cache", "verify"))
    assert (clean["state"], clean["objects"], clean["checked"], clean["mismatched"]) == ("done", str(objects),
                                                                                          str(objects), "0")

    digest, size = image.layers[0]
    path = proxy.data_dir / "cache" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    with path.open("r+b") as f:  # same size, same inode: only the bytes are wrong
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = time.time()

    result = cli.run("cache", "verify")

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("registry-proxy: 1 cached object did not match its digest"), result.stderr
    report = parse_fields(result.stdout)
    assert (report["state"], report["objects"], report["checked"], report["mismatched"], report["quarantined"],
            report["missing"]) == ("done", str(objects), str(objects), "1", "1", "0")
    assert int(report["bytes"].split()[0]) >= size
    assert not path.exists()
    assert (proxy.data_dir / "cache" / "quarantine" / "blobs" / "sha256" / digest[7:]).stat().st_size == size

    metrics = scrape(proxy)
    assert metrics("registry_proxy_cache_verify_runs_total", result="clean") == 1
    assert metrics("registry_proxy_cache_verify_runs_total", result="mismatches") == 1
    assert metrics("registry_proxy_cache_verify_objects_checked_total") == 2 * objects
    assert metrics("registry_proxy_cache_verify_mismatches_total") == 1
    assert metrics("registry_proxy_cache_verify_last_end_timestamp_seconds") >= before

    # Never served again: the next GET goes upstream and answers the right bytes.
    assert plain_upstream.wait_requests("GET", f"/blobs/{digest}") == 1
    again = get(proxy.host, f"/v2/{repo}/blobs/{digest}")
    assert again.status == 200 and "sha256:" + hashlib.sha256(again.body).hexdigest() == digest
    assert plain_upstream.wait_requests("GET", f"/blobs/{digest}", at_least=2) == 2
    assert parse_fields(cli.ok("cache", "verify"))["mismatched"] == "0"
