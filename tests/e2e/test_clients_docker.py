"""docker pulling through the proxy, set up as docs/clients.md ("Docker") says.

One dockerd for the module (vfs, no iptables, no bridge, its own roots and
socket); each test points its daemon.json at a new proxy and reloads it with
SIGHUP. The proxy maps docker.io and quay.io to one local registry.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from .daemons import Dockerd, assert_through_proxy, hub_and_quay, layer_file
from .images import ImageInfo, build_image, push
from .proxyproc import ProxyFactory
from .upstream import Upstream

CERTS_D = Path("/etc/docker/certs.d")


def assert_pulled(dockerd: Dockerd, ref: str, output: str, image: ImageInfo, layout: Path) -> None:
    """What the user sees: the digest docker printed and recorded, the image ID, a file of the layer."""
    assert f"Digest: {image.manifest_digest}" in output, output
    name = ref.rpartition(":")[0]
    inspected = json.loads(dockerd.docker("image", "inspect", "--format", "{{json .}}", ref).stdout)
    assert f"{name}@{image.manifest_digest}" in inspected["RepoDigests"]
    assert inspected["Id"] == image.config_digest
    # The container is only created, never started: its filesystem is enough.
    container = dockerd.docker("create", "--network", "none", ref).stdout.strip()
    try:
        archive = dockerd.docker("cp", f"{container}:/data/layer-0.bin", "-", text=False).stdout
    finally:
        dockerd.docker("rm", container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("layer-0.bin")
        assert member is not None
        assert member.read() == layer_file(layout, image)


def test_docker_hub_names_through_registry_mirrors(dockerd: Dockerd, plain_upstream: Upstream, oci_layout: Path,
                                                   make_proxy: ProxyFactory) -> None:
    """docs/clients.md, Docker: `registry-mirrors` (with `insecure-registries`) for Docker Hub names."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "library/alpine-like")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    dockerd.reconfigure({"registry-mirrors": [proxy.url], "insecure-registries": [proxy.host]})

    pulled = dockerd.docker("pull", "alpine-like:1")
    assert_pulled(dockerd, "alpine-like:1", pulled.stdout, image, oci_layout)
    # The mirror gets the Docker Hub path; the proxy's default registry serves it.
    assert_through_proxy(proxy, plain_upstream, image, "library/alpine-like", "1", registry="docker.io")


def test_other_registries_through_a_prefix(dockerd: Dockerd, plain_upstream: Upstream, oci_layout: Path,
                                           make_proxy: ProxyFactory) -> None:
    """docs/clients.md, Docker: `docker pull proxy:5000/quay.io/org/app:1` for any other registry."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    dockerd.reconfigure({"insecure-registries": [proxy.host]})

    ref = f"{proxy.host}/quay.io/org/app:1"
    pulled = dockerd.docker("pull", ref)
    assert_pulled(dockerd, ref, pulled.stdout, image, oci_layout)
    assert_through_proxy(proxy, plain_upstream, image, "org/app", "1", proxy_repo="quay.io/org/app", registry="quay.io")


@pytest.fixture
def certs_d_entry() -> Iterator[Callable[[str, bytes], Path]]:
    """Install /etc/docker/certs.d/<host:port>/ca.crt; removed (with any dir created) at teardown."""
    created: list[Path] = []

    def install(host: str, ca_pem: bytes) -> Path:
        for directory in (CERTS_D.parent, CERTS_D, CERTS_D / host):
            if not directory.exists():
                directory.mkdir()
                created.append(directory)
        ca_file = CERTS_D / host / "ca.crt"
        assert not ca_file.exists(), f"{ca_file} exists already; not overwriting it"
        ca_file.write_bytes(ca_pem)
        created.append(ca_file)
        return ca_file

    yield install
    for path in reversed(created):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def test_https_proxy_with_a_private_ca_in_certs_d(dockerd: Dockerd, plain_upstream: Upstream, oci_layout: Path,
                                                  make_proxy: ProxyFactory, tmp_path: Path,
                                                  certs_d_entry: Callable[[str, bytes], Path]) -> None:
    """docs/clients.md, Docker: a proxy serving HTTPS with a private CA, trusted
    through /etc/docker/certs.d/<host:port>/ca.crt, no `insecure-registries`.

    dockerd treats every 127.0.0.0/8 registry as insecure (hard-coded), so on
    loopback it neither verifies the certificate nor reads certs.d: this test
    shows the set-up pulls over HTTPS, not that the CA file is what made it work.
    """
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    ca = trustme.CA()
    served = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "proxy.crt", tmp_path / "proxy.key"
    served.cert_chain_pems[0].write_to_path(str(cert_file))
    served.private_key_pem.write_to_path(str(key_file))
    proxy = make_proxy({"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}, **hub_and_quay(plain_upstream)})
    assert proxy.url.startswith("https://")
    certs_d_entry(proxy.host, ca.cert_pem.bytes())
    dockerd.reconfigure({})

    ref = f"{proxy.host}/quay.io/org/app:1"
    pulled = dockerd.docker("pull", ref)
    assert_pulled(dockerd, ref, pulled.stdout, image, oci_layout)
    # The proxy speaks only TLS on its port: a request in its log came over HTTPS.
    assert_through_proxy(proxy, plain_upstream, image, "org/app", "1", proxy_repo="quay.io/org/app", registry="quay.io")
