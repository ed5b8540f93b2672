"""podman pulling through the proxy as a registries.conf mirror, as docs/clients.md
("podman and CRI-O") says.

podman has no daemon: every call gets its own --root/--runroot (vfs),
containers.conf, storage.conf, auth file and signature policy under the
test's directory, and CONTAINERS_REGISTRIES_CONF names the file under test.
The proxy maps docker.io and quay.io to one local registry.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemons import (
    assert_through_proxy,
    hub_and_quay,
    layer_file,
    mounts_under,
    offline_env,
    remove_tree,
    require_root,
    run,
)
from .images import ImageInfo, build_image, push
from .proxyproc import ProxyFactory
from .tools import free_port, require_binary
from .upstream import Upstream


class Podman:
    def __init__(self, base: Path, registries_conf: Path) -> None:
        require_root("podman with its own --root")
        self.binary = require_binary("podman")
        self.base = base
        self.root, tmpdir = base / "root", base / "tmp"
        # podman refuses a runroot longer than 50 characters; tmp_path's are longer.
        self.runroot = Path(tempfile.mkdtemp(prefix="podman-run-"))
        tmpdir.mkdir(parents=True)
        (base / "containers.conf").write_text("")
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n')
        (base / "auth.json").write_text('{"auths": {}}\n')
        self.policy = base / "policy.json"
        self.policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        self.env = offline_env({
            "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
            "REGISTRY_AUTH_FILE": str(base / "auth.json"),
            "TMPDIR": str(tmpdir),  # where image layers are staged
        })
        self.argv = [self.binary, "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs",
                     "--tmpdir", str(tmpdir), "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[Any]:
        return run([*self.argv, *args], env=self.env, check=check)

    def pull(self, ref: str) -> str:
        return str(self("pull", "--signature-policy", str(self.policy), ref).stdout)

    def cleanup(self) -> None:
        remove_tree(self.runroot)
        remove_tree(self.base)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    client = Podman(tmp_path / "podman", tmp_path / "registries.conf")
    yield client
    client.cleanup()


def assert_pulled(podman: Podman, ref: str, output: str, image: ImageInfo, layout: Path) -> None:
    """What the user sees: the ID podman printed, the digest it recorded, a file of the layer."""
    image_id = image.config_digest.removeprefix("sha256:")
    assert output.split() == [image_id], output
    inspected = json.loads(podman("image", "inspect", ref).stdout)[0]
    assert inspected["Id"] == image_id
    assert inspected["Digest"] == image.manifest_digest
    assert ref in inspected["RepoTags"]
    rootfs = Path(podman("image", "mount", ref).stdout.strip())
    try:
        assert (rootfs / "data" / "layer-0.bin").read_bytes() == layer_file(layout, image)
    finally:
        podman("image", "unmount", ref)
    assert not mounts_under(podman.base) and not mounts_under(podman.runroot)


def test_quay_io_through_a_registry_mirror(podman: Podman, plain_upstream: Upstream, oci_layout: Path,
                                           make_proxy: ProxyFactory, tmp_path: Path) -> None:
    """docs/clients.md, podman: `[[registry.mirror]] location = "proxy:5000/quay.io"`, `insecure = true`."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    (tmp_path / "registries.conf").write_text(
        '[[registry]]\n'
        'prefix = "quay.io"\n'
        'location = "quay.io"\n'
        '\n'
        '[[registry.mirror]]\n'
        f'location = "{proxy.host}/quay.io"\n'
        'insecure = true\n'
    )

    pulled = podman.pull("quay.io/org/app:1")
    assert_pulled(podman, "quay.io/org/app:1", pulled, image, oci_layout)
    assert_through_proxy(proxy, plain_upstream, image, "org/app", "1", proxy_repo="quay.io/org/app", registry="quay.io")


@pytest.mark.parametrize("path", ["", "/docker.io"], ids=["root", "docker.io-prefix"])
def test_docker_hub_through_a_registry_mirror(podman: Podman, plain_upstream: Upstream, oci_layout: Path,
                                              make_proxy: ProxyFactory, tmp_path: Path, path: str) -> None:
    """docs/clients.md, podman: a docker.io mirror at the proxy's root (the
    default registry), or at its docker.io prefix."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "library/alpine-like")
    proxy = make_proxy(hub_and_quay(plain_upstream))
    (tmp_path / "registries.conf").write_text(
        '[[registry]]\n'
        'prefix = "docker.io"\n'
        'location = "docker.io"\n'
        '\n'
        '[[registry.mirror]]\n'
        f'location = "{proxy.host}{path}"\n'
        'insecure = true\n'
    )

    pulled = podman.pull("docker.io/library/alpine-like:1")
    assert_pulled(podman, "docker.io/library/alpine-like:1", pulled, image, oci_layout)
    assert_through_proxy(proxy, plain_upstream, image, "library/alpine-like", "1",
                         proxy_repo=f"{path.lstrip('/')}/library/alpine-like".lstrip("/"), registry="docker.io")


def test_registry_with_a_port_through_its_alias(podman: Podman, plain_upstream: Upstream, oci_layout: Path,
                                                make_proxy: ProxyFactory, tmp_path: Path) -> None:
    """README, podman: a registry with a port is mirrored to its alias, `location = "proxy:5000/<alias>"`;
    `proxy:5000/host:port` is no location podman can use."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "team/app")
    # Nothing listens on the registry's own address: only the mirror can serve the pull.
    address = f"127.0.0.1:{free_port()}"
    proxy = make_proxy({"registries": [{"address": address, "endpoint": plain_upstream.url, "alias": "team-registry"}]})
    (tmp_path / "registries.conf").write_text(
        '[[registry]]\n'
        f'prefix = "{address}"\n'
        f'location = "{address}"\n'
        'insecure = true\n'
        '\n'
        '[[registry.mirror]]\n'
        f'location = "{proxy.host}/team-registry"\n'
        'insecure = true\n'
    )

    ref = f"{address}/team/app:1"
    pulled = podman.pull(ref)
    assert_pulled(podman, ref, pulled, image, oci_layout)
    assert_through_proxy(proxy, plain_upstream, image, "team/app", "1", proxy_repo="team-registry/team/app",
                         registry=address)
