"""Starting the proxy: embedded defaults, and config errors that stop it in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .http import get
from .proxyproc import REPO_ROOT, ProxyFactory
from .tools import free_port, reap, spawn, wait_http


def run_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "serve", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn([sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{port}"], tmp_path / "log",
                 cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", ok=(200,), proc=proc)
        # /v2/ challenges a client that sent nothing, and the realm is where it connected.
        challenge = get(f"127.0.0.1:{port}", "/v2/")
        assert challenge.status == 401
        assert challenge.headers["www-authenticate"] == (
            f'Bearer realm="http://127.0.0.1:{port}/auth/token",service="registry-proxy"')
        # The default environment admits anonymous clients: the realm gives them a token.
        token = json.loads(get(f"127.0.0.1:{port}", "/auth/token?service=registry-proxy").body)["token"]
        reply = get(f"127.0.0.1:{port}", "/v2/", Authorization=f"Bearer {token}")
        assert reply.status == 200
        assert reply.headers["docker-distribution-api-version"] == "registry/2.0"
        # State and cache under ./data of the working directory.
        assert (tmp_path / "data" / "cache" / "blobs").is_dir()
    finally:
        reap(proc)


BAD_CONFIGS = [
    ({"lisen": "127.0.0.1:5000"}, "'lisen'"),
    ({"cache": {"max_size": "lots"}}, "'cache.max_size' has value 'lots'"),
    ({"cache": {"tag_ttl": [1]}}, "'cache.tag_ttl'"),
    ({"cache": {"maxsize": 1}}, "'cache.maxsize' is not a known key"),
    ({"registries": [{"address": "https://quay.io"}]}, "drop the scheme: use `quay.io`"),
    ({"registries": [{"address": "quay.io", "insecure": "sometimes"}]}, "'registries[0].insecure' has value 'sometimes'"),
    ({"settings": {"registry.whitelist": "quay.io, http://ghcr.io"}}, "'settings.registry.whitelist'"),
    ({"settings": {"registry.defualt": "quay.io"}}, "'settings.registry.defualt' is not a known key"),
    ({"listen": "localhost"}, "'listen' has value 'localhost'"),
]


@pytest.mark.parametrize("config,expected", BAD_CONFIGS)
def test_config_errors_stop_start_up_in_one_line(tmp_path: Path, config: dict[str, object], expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_serve(tmp_path, "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not (tmp_path / "data").exists()


def test_port_in_use_is_one_line_naming_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"registry-proxy: Config 'listen' has value '127.0.0.1:{port}': address already in use"]
    assert not (tmp_path / "data").exists()


def test_the_start_up_log_names_the_status_page_and_where_the_token_is(make_proxy: ProxyFactory) -> None:
    # An empty variable: the proxy generates its token into <data_dir>/admin-token.
    proxy = make_proxy({}, env={"REGISTRY_PROXY_ADMIN_TOKEN": ""})
    token_file = proxy.data_dir / "admin-token"
    assert (f"status page at http://{proxy.host}/ (any user name, the admin token from {token_file} as the "
            "password)") in proxy.log_text()
    assert token_file.read_text().strip() not in proxy.log_text()

    admin_port = free_port()
    public = make_proxy({"admin": {"listen": f"127.0.0.1:{admin_port}"}, "status": {"public": True}},
                        env={"REGISTRY_PROXY_ADMIN_TOKEN": "t" * 20}, name="public")
    assert (f"status page at http://127.0.0.1:{admin_port}/ (public; the admin API takes the token from "
            "$REGISTRY_PROXY_ADMIN_TOKEN)") in public.log_text()
    assert "t" * 20 not in public.log_text()
