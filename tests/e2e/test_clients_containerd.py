"""containerd pulling through the proxy with hosts.toml, as docs/clients.md ("containerd") says.

One containerd for the module (CRI off, `native` snapshotter, its own root,
state and socket), driven by `ctr images pull --hosts-dir`: ctr resolves the
registry from DIR/<registry>/hosts.toml, the way the CRI plugin does from
`config_path` on a Kubernetes node. The proxy maps docker.io and quay.io to
one local registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from .daemons import Containerd, assert_through_proxy, hub_and_quay, layer_file, mounts_under
from .images import ImageInfo, build_image, push, read_blob
from .proxyproc import ProxyFactory, ProxyProcess
from .tools import free_port
from .upstream import Upstream


def hosts_dir(base: Path, files: dict[str, str]) -> Path:
    """A hosts directory: one <registry>/hosts.toml per entry."""
    for registry, text in files.items():
        (base / registry).mkdir(parents=True)
        (base / registry / "hosts.toml").write_text(text)
    return base


def pull(containerd: Containerd, hosts: Path, ref: str, *, check: bool = True) -> str:
    result = containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", Containerd.SNAPSHOTTER,
                            ref, check=check)
    return str(result.stdout) + str(result.stderr)


def assert_pulled(containerd: Containerd, ref: str, image: ImageInfo, layout: Path, mount_at: Path) -> None:
    """What the user sees: the image's digest in `ctr images ls`, its layer in
    the content store, and the layer's file in the unpacked (mounted) image."""
    listed = containerd.ctr("images", "ls", "--quiet").stdout.split()
    assert ref in listed
    digest = containerd.ctr("images", "ls", f"name=={ref}").stdout.splitlines()[1].split()[2]
    assert digest == image.manifest_digest
    layer = containerd.ctr("content", "get", image.layers[0][0], text=False).stdout
    with read_blob(layout, image.layers[0][0]) as blob:
        assert layer == blob.read()
    mount_at.mkdir()
    containerd.ctr("images", "mount", "--snapshotter", Containerd.SNAPSHOTTER, ref, str(mount_at))
    try:
        assert (mount_at / "data" / "layer-0.bin").read_bytes() == layer_file(layout, image)
    finally:
        containerd.ctr("images", "unmount", str(mount_at))
    assert not mounts_under(mount_at)


def seeded(upstream: Upstream, layout: Path, repo: str) -> ImageInfo:
    image = build_image(layout, "1")  # random content: a new image every time
    push(upstream, layout, "1", repo)
    return image


def test_docker_hub_through_hosts_toml(containerd: Containerd, plain_upstream: Upstream, oci_layout: Path,
                                       make_proxy: ProxyFactory, tmp_path: Path) -> None:
    """docs/clients.md, containerd: /etc/containerd/certs.d/docker.io/hosts.toml."""
    image = seeded(plain_upstream, oci_layout, "library/alpine-like")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    hosts = hosts_dir(tmp_path / "certs.d", {"docker.io": (
        'server = "https://registry-1.docker.io"\n'
        f'[host."http://{proxy.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )})

    pull(containerd, hosts, "docker.io/library/alpine-like:1")
    assert_pulled(containerd, "docker.io/library/alpine-like:1", image, oci_layout, tmp_path / "rootfs")
    # Asked for /v2/library/alpine-like/...?ns=docker.io: ns picked the registry.
    assert_through_proxy(proxy, plain_upstream, image, "library/alpine-like", "1", registry="docker.io")


@pytest.mark.parametrize("directory", ["quay.io", "_default"])
def test_other_registry_is_picked_by_ns(containerd: Containerd, plain_upstream: Upstream, oci_layout: Path,
                                        make_proxy: ProxyFactory, tmp_path: Path, directory: str) -> None:
    """docs/clients.md, containerd: quay.io/hosts.toml pointing at the proxy's
    root, and _default/hosts.toml doing the same for every registry.

    containerd asks for /v2/org/app/manifests/1?ns=quay.io; without `ns` the
    proxy would take org/app for a Docker Hub name.
    """
    image = seeded(plain_upstream, oci_layout, "org/app")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    host = f'[host."http://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n'
    # _default has no `server`: each registry falls back to its own https://<name>.
    text = host if directory == "_default" else f'server = "https://quay.io"\n\n{host}'
    hosts = hosts_dir(tmp_path / "certs.d", {directory: text})

    pull(containerd, hosts, "quay.io/org/app:1")
    assert_pulled(containerd, "quay.io/org/app:1", image, oci_layout, tmp_path / "rootfs")
    assert_through_proxy(proxy, plain_upstream, image, "org/app", "1", registry="quay.io")


def test_other_registry_with_override_path(containerd: Containerd, plain_upstream: Upstream, oci_layout: Path,
                                           make_proxy: ProxyFactory, tmp_path: Path) -> None:
    """docs/clients.md, containerd: `override_path = true` with the registry as a path prefix."""
    image = seeded(plain_upstream, oci_layout, "team/tool")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    hosts = hosts_dir(tmp_path / "certs.d", {"quay.io": (
        'server = "https://quay.io"\n'
        f'[host."http://{proxy.host}/v2/quay.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        '  override_path = true\n'
    )})

    pull(containerd, hosts, "quay.io/team/tool:1")
    assert_pulled(containerd, "quay.io/team/tool:1", image, oci_layout, tmp_path / "rootfs")
    assert_through_proxy(proxy, plain_upstream, image, "team/tool", "1", proxy_repo="quay.io/team/tool",
                         registry="quay.io")


@pytest.mark.parametrize("mirror", ["ns", "alias"])
def test_registry_with_a_port_by_ns_or_through_its_alias(containerd: Containerd, plain_upstream: Upstream,
                                                         oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path,
                                                         mirror: str) -> None:
    """README, containerd: certs.d/<host:port>/hosts.toml. containerd asks for
    /v2/team/tool/...?ns=<host:port>, which names the registry port and all;
    or, with override_path, for the registry's alias as a path prefix."""
    image = seeded(plain_upstream, oci_layout, "team/tool")
    # Nothing listens on the registry's own address: only the proxy can serve the pull.
    address = f"127.0.0.1:{free_port()}"
    proxy = make_proxy({"registries": [{"address": address, "endpoint": plain_upstream.url, "alias": "ported"}]})
    host = (f'[host."http://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n' if mirror == "ns" else
            f'[host."http://{proxy.host}/v2/ported"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n')
    hosts = hosts_dir(tmp_path / "certs.d", {address: f'server = "http://{address}"\n\n{host}'})

    ref = f"{address}/team/tool:1"
    pull(containerd, hosts, ref)
    assert_pulled(containerd, ref, image, oci_layout, tmp_path / "rootfs")
    assert_through_proxy(proxy, plain_upstream, image, "team/tool", "1",
                         proxy_repo="team/tool" if mirror == "ns" else "ported/team/tool", registry=address)


def _https_proxy(make_proxy: ProxyFactory, upstream: Upstream, base: Path) -> tuple[ProxyProcess, Path]:
    ca = trustme.CA()
    served = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = base / "proxy.crt", base / "proxy.key", base / "proxy-ca.crt"
    served.cert_chain_pems[0].write_to_path(str(cert_file))
    served.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    proxy = make_proxy({"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}, **hub_and_quay(upstream)})
    return proxy, ca_file


def test_https_proxy_with_a_private_ca(containerd: Containerd, plain_upstream: Upstream, oci_layout: Path,
                                       make_proxy: ProxyFactory, tmp_path: Path) -> None:
    """docs/clients.md, containerd: `ca = ...` in hosts.toml for a proxy serving HTTPS.

    Unlike dockerd, containerd verifies loopback registries too: without the
    CA the pull fails.
    """
    image = seeded(plain_upstream, oci_layout, "org/secure")
    proxy, ca_file = _https_proxy(make_proxy, plain_upstream, tmp_path)
    host = f'[host."https://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n'
    untrusted = hosts_dir(tmp_path / "untrusted", {"quay.io": 'server = "https://quay.io"\n' + host})
    trusted = hosts_dir(tmp_path / "certs.d", {"quay.io": f'server = "https://quay.io"\n{host}  ca = "{ca_file}"\n'})

    failed = containerd.ctr("images", "pull", "--hosts-dir", str(untrusted), "quay.io/org/secure:1", check=False)
    assert failed.returncode != 0
    # ctr names the mirror request (with the ?ns= it adds) and why it failed;
    # the fallback to https://quay.io died on the dead loopback HTTPS_PROXY.
    assert f"https://{proxy.host}/v2/org/secure/manifests/1?ns=quay.io" in failed.stderr, failed.stderr
    assert "certificate signed by unknown authority" in failed.stderr
    assert "proxyconnect tcp: dial tcp 127.0.0.1:9" in failed.stderr
    assert "quay.io/org/secure:1" not in containerd.ctr("images", "ls", "--quiet").stdout.split()
    assert not proxy_manifest_requests(proxy), "an unverified connection must not get as far as HTTP"

    pull(containerd, trusted, "quay.io/org/secure:1")
    assert_pulled(containerd, "quay.io/org/secure:1", image, oci_layout, tmp_path / "rootfs")
    assert_through_proxy(proxy, plain_upstream, image, "org/secure", "1", registry="quay.io")


def proxy_manifest_requests(proxy: ProxyProcess) -> list[str]:
    return [line for line in proxy.log_text().splitlines() if "/manifests/" in line]
