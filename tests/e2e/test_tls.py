"""TLS both ways: self-signed, insecure and mutual-TLS upstreams; the proxy served over HTTPS."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import trustme

from .admin import Admin, new_token
from .http import get
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .tools import skopeo_ok, wait_until
from .upstream import Upstream

UpstreamFactory = Callable[..., Upstream]
NAME = "registry.example.com"
PATH = f"/v2/{NAME}/org/app/manifests/1"


def seeded(make_upstream: UpstreamFactory, layout: Path, **kwargs: object) -> tuple[Upstream, bytes]:
    upstream = make_upstream("tls", **kwargs)
    image = build_image(layout, "1")
    push(upstream, layout, "1", "org/app")
    return upstream, image.manifest_bytes


def with_admin(make_proxy: ProxyFactory, config: dict[str, object] | None = None) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    proxy = make_proxy(config or {}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    return proxy, Admin(proxy.host, token)


def test_self_signed_upstream_fails_clearly_until_its_certificate_is_trusted(
        make_upstream: UpstreamFactory, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    upstream, manifest = seeded(make_upstream, oci_layout, tls=True, self_signed=True)
    proxy, admin = with_admin(make_proxy)
    admin.ok("PATCH", f"/upstreams/{NAME}", {"endpoint": upstream.url})

    failed = get(proxy.host, PATH)
    assert failed.status == 502 and failed.error_codes == ["UNKNOWN"]
    assert NAME in failed.error_message and "unknown authority" in failed.error_message
    assert f"registries fetch-ca {NAME}" in failed.error_message

    presented = admin.ok("GET", f"/upstreams/{NAME}/certificates")["certificates"]
    expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(upstream.ca_file.read_text())).hexdigest()  # type: ignore[union-attr]
    assert [c["sha256"].replace(":", "").lower() for c in presented] == [expected]
    changed = admin.ok("PATCH", f"/upstreams/{NAME}", {"ca_cert": presented[0]["pem"]})
    assert changed["ca_certificates"][0]["sha256"] == presented[0]["sha256"]
    assert get(proxy.host, PATH).body == manifest


def test_name_mismatch_is_named(make_upstream: UpstreamFactory, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    upstream, _ = seeded(make_upstream, oci_layout, tls=True, self_signed=True)
    ca = str(upstream.ca_file)
    proxy = make_proxy({"registries": [{"address": NAME, "endpoint": upstream.url.replace("127.0.0.1", "localhost"),
                                        "ca_cert": ca}]})
    reply = get(proxy.host, PATH)
    assert reply.status == 502 and "name mismatch" in reply.error_message


def test_insecure_skips_verification_and_falls_back_to_plain_http(
        make_upstream: UpstreamFactory, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    tls_upstream, tls_manifest = seeded(make_upstream, oci_layout, tls=True, self_signed=True)
    plain = make_upstream("plain")
    plain_image = build_image(oci_layout, "2")
    push(plain, oci_layout, "2", "org/app")
    proxy = make_proxy({"registries": [
        {"address": NAME, "endpoint": tls_upstream.url, "insecure": True},
        # Named by address only: https://<address> is tried first, then plain HTTP.
        {"address": plain.host, "insecure": True},
    ]})
    assert get(proxy.host, PATH).body == tls_manifest
    assert get(proxy.host, f"/v2/{plain.host}/org/app/manifests/2").body == plain_image.manifest_bytes
    strict = make_proxy({"registries": [{"address": plain.host}]}, name="strict")
    refused = get(strict.host, f"/v2/{plain.host}/org/app/manifests/2")
    assert refused.status == 502 and "does not speak TLS" in refused.error_message


def test_mutual_tls_upstream(make_upstream: UpstreamFactory, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    upstream, manifest = seeded(make_upstream, oci_layout, tls=True, client_ca=True)
    assert upstream.client_files is not None
    cert, key = upstream.client_files
    without = make_proxy({"registries": [{"address": NAME, "endpoint": upstream.url,
                                          "ca_cert": str(upstream.ca_file)}]}, name="without")
    refused = get(without.host, PATH)
    assert refused.status in (502, 503) and NAME in refused.error_message

    proxy = make_proxy({"registries": [{"address": NAME, "endpoint": upstream.url, "ca_cert": str(upstream.ca_file),
                                        "client_cert": str(cert), "client_key": str(key)}]})
    assert get(proxy.host, PATH).body == manifest

    api_proxy, admin = with_admin(make_proxy)
    other_key = trustme.CA().issue_cert("x").private_key_pem.bytes().decode()
    mismatched = admin.call("PATCH", f"/upstreams/{NAME}", {"client_cert": cert.read_text(), "client_key": other_key})
    assert mismatched.status == 400 and mismatched.json()["error"]["field"] == "client_key"
    view = admin.ok("PATCH", f"/upstreams/{NAME}", {"endpoint": upstream.url, "ca_cert": upstream.ca_file.read_text(),  # type: ignore[union-attr]
                                                    "client_cert": cert.read_text(), "client_key": key.read_text()})
    assert view["client_key_set"] is True and "client_key" not in view
    assert key.read_text() not in api_proxy.log_text()
    assert get(api_proxy.host, PATH).body == manifest


def _server_pair(base: Path, name: str) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = base / f"{name}.crt", base / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca, cert_file, key_file


def _presented(host: str) -> bytes:
    address, _, port = host.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((address, int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_proxy_over_https_is_pulled_by_skopeo_with_cert_dir(plain_upstream: Upstream, oci_layout: Path,
                                                            make_proxy: ProxyFactory, tmp_path: Path) -> None:
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    ca, cert_file, key_file = _server_pair(tmp_path, "proxy")
    proxy = make_proxy({"tls": {"cert_file": str(cert_file), "key_file": str(key_file)},
                        "registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    cert_dir = tmp_path / "client-certs"
    cert_dir.mkdir()
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    skopeo_ok("copy", "--src-tls-verify=true", f"--src-cert-dir={cert_dir}", "--src-no-creds",
              f"docker://{proxy.host}/quay.io/org/app:1", f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / "manifest.json").read_bytes() == image.manifest_bytes


def test_rotated_certificate_is_served_to_new_connections(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    first_ca, cert_file, key_file = _server_pair(tmp_path, "live")
    proxy = make_proxy({"tls": {"cert_file": str(cert_file), "key_file": str(key_file), "reload_interval": "0.3s"}})
    first = _presented(proxy.host)
    address, _, port = proxy.host.rpartition(":")
    trusting_first = ssl.create_default_context(cadata=first_ca.cert_pem.bytes().decode())
    kept = http.client.HTTPSConnection(address, int(port), context=trusting_first)
    kept.request("GET", "/healthz")
    assert _status(kept) == 200

    # cert-manager style: the new pair replaces the files in place, the
    # certificate first; a reload in between sees a mismatched pair and must
    # keep serving the old one.
    _, new_cert, new_key = _server_pair(tmp_path, "next")
    cert_file.write_bytes(new_cert.read_bytes())
    wait_until(lambda: "keeping the current TLS certificate" in proxy.log_text(), what="a reload of the mismatched pair")
    assert _presented(proxy.host) == first
    key_file.write_bytes(new_key.read_bytes())
    rotated = ssl.PEM_cert_to_DER_cert(new_cert.read_text())
    wait_until(lambda: _presented(proxy.host) == rotated, what="the rotated certificate")
    # The connection opened before the rotation carries on.
    kept.request("GET", "/healthz")
    assert _status(kept) == 200
    kept.close()


def _status(connection: http.client.HTTPSConnection) -> int:
    response = connection.getresponse()
    response.read()  # the connection takes no next request until this one is read
    return response.status


def test_sighup_reloads_the_certificate(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    _, cert_file, key_file = _server_pair(tmp_path, "live")
    proxy = make_proxy({"tls": {"cert_file": str(cert_file), "key_file": str(key_file), "reload_interval": "1h"}})
    _, new_cert, new_key = _server_pair(tmp_path, "next")
    key_file.write_bytes(new_key.read_bytes())
    cert_file.write_bytes(new_cert.read_bytes())
    rotated = ssl.PEM_cert_to_DER_cert(new_cert.read_text())
    # reload_interval is an hour: until the signal nothing looks at the files.
    assert _presented(proxy.host) != rotated
    assert "loaded TLS certificate" not in proxy.log_text()
    os.kill(proxy.pid, signal.SIGHUP)
    wait_until(lambda: "loaded TLS certificate" in proxy.log_text(), timeout=5, what="the reload SIGHUP asks for")
    assert _presented(proxy.host) == rotated
