"""The container image: built offline from wheels, run as non-root, pulled through.

dockerd here cannot download base images, so the base is made locally:
debootstrap a minimal Debian with python3, then `docker import`. This takes
minutes, so it runs only with REGISTRY_PROXY_IMAGE_TEST=1, which .ci/run sets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .daemons import Dockerd, remove_tree
from .http import get
from .images import build_image, push
from .proxyproc import REPO_ROOT
from .tools import free_port, require_binary, skopeo_ok, wait_http
from .upstream import Upstream

SWITCH = "REGISTRY_PROXY_IMAGE_TEST"
BASE_TAG = "registry-proxy-test/base:bookworm"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "registry-proxy-tests"

pytestmark = pytest.mark.skipif(os.environ.get(SWITCH) != "1",
                                reason=f"image build takes minutes; set {SWITCH}=1 (CI does)")


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE)
        if match:
            return match[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", sources.read_text(), re.MULTILINE)
        if match:
            return match[1]
    pytest.fail("no Debian mirror found in the apt sources")


def _base_tarball() -> Path:
    tarball = CACHE / "bookworm-python3.tar"
    if tarball.exists():
        return tarball
    debootstrap = require_binary("debootstrap")
    rootfs = CACHE / "rootfs"
    remove_tree(rootfs)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([debootstrap, "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs),
                    _apt_mirror()], check=True, capture_output=True, timeout=900)
    # What an image needs no copy of: downloaded packages, docs, translations.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/locale", "usr/share/info"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    subprocess.run(["tar", "-C", str(rootfs), "-cf", f"{tarball}.part", "."], check=True, timeout=300)
    os.replace(f"{tarball}.part", tarball)
    remove_tree(rootfs)
    return tarball


def test_image_builds_offline_and_serves_pulls_as_non_root(dockerd: Dockerd, plain_upstream: Upstream,
                                                           oci_layout: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    tarball = _base_tarball()
    dockerd.docker("import", str(tarball), BASE_TAG, timeout=300)
    based = time.monotonic()

    # The build context as the offline recipe makes it: sources plus wheels.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, context / name)
    shutil.copytree(REPO_ROOT / "proxy", context / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(context / "build" / "wheels"),
                    str(context)], check=True, timeout=600)
    # dockerd here has no bridge: the build's RUN steps have no network, so
    # this proves the wheels are enough.
    dockerd.docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={BASE_TAG}", "--build-arg", "WHEELS=build/wheels",
                   "-t", "registry-proxy:e2e", str(context), timeout=1200)
    built = time.monotonic()

    image = json.loads(dockerd.docker("image", "inspect", "registry-proxy:e2e").stdout)[0]["Config"]
    assert image["User"] == "10001:10001"
    assert "/data" in image["Volumes"] and "5000/tcp" in image["ExposedPorts"]
    assert image["Entrypoint"] == ["registry-proxy", "serve", "--config", "/etc/registry-proxy/config.yaml"]
    tools = dockerd.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", "registry-proxy:e2e", "-c",
                           "for t in gcc cc make pip pip3; do command -v $t; done; true").stdout
    assert tools.strip() == "", f"build tools left in the final image: {tools}"

    build_image(oci_layout, "1", layer_sizes=[30_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "data_dir": "/data",
        "registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]}))
    config.chmod(0o644)
    container = dockerd.docker("run", "-d", "--network", "host", "-v", f"{config}:/etc/registry-proxy/config.yaml:ro",
                               "registry-proxy:e2e").stdout.strip()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, ok=(200,))
        assert dockerd.docker("exec", container, "id", "-u").stdout.strip() == "10001"
        # A config of one's own that names no key file: the key still lands in the volume.
        assert dockerd.docker("exec", container, "test", "-s", "/data/secret.key", check=False).returncode == 0
        assert dockerd.docker("exec", container, "test", "-e", "/data.key", check=False).returncode == 1
        skopeo_ok("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://127.0.0.1:{port}/quay.io/org/app:1",
                  f"dir:{tmp_path / 'out'}")
        assert get(f"127.0.0.1:{port}", "/v2/quay.io/org/app/manifests/1").headers["x-registry-proxy-cache"] == "hit"
        check = image["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        assert dockerd.docker("exec", container, *check[1:], check=False).returncode == 0
    finally:
        logs = dockerd.docker("logs", container, check=False).stdout
        dockerd.docker("rm", "-f", container, check=False)
    print(f"\nimage test: base {based - started:.0f} s, build {built - based:.0f} s, run and pull "
          f"{time.monotonic() - built:.0f} s\n{logs[-2000:]}")
