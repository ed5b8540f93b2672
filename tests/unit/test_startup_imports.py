"""A serving proxy loads the cloud SDKs, cryptography, Jinja and psycopg only once something needs them.

Each check runs in a fresh interpreter, so modules an earlier test imported
do not hide an import the server does at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# What `serve` imports and starts: the command line, then the runner proxy.app builds, answering /v2/.
_SERVE = textwrap.dedent("""
    import asyncio, json, socket, sys
    from pathlib import Path

    import aiohttp
    import proxy.cli.main
    from proxy.app import create_runner
    from proxy.config.settings import load_settings

    LATER = ("boto3", "botocore", "google.auth", "cryptography", "jinja2", "proxy.cli.admin", "proxy.cli.client",
             "psycopg", "psycopg_pool")

    async def main(config, data_dir):
        settings = load_settings(Path(config) if config else None, listen="127.0.0.1:0", data_dir=data_dir)
        runner = create_runner(settings)
        stop_helpers = await start_helpers()
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        await runner.site(sock).start()
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{sock.getsockname()[1]}/v2/") as response:
                    answered = response.status
            loaded_at_start = sorted(name for name in LATER if name in sys.modules)
            result = {"answered": answered, "loaded_at_start": loaded_at_start}
            result.update(await after_start(runner.app))
        finally:
            await runner.cleanup()
            await stop_helpers()
        print(json.dumps(result))
""")

_NOTHING_MORE = textwrap.dedent("""
    async def start_helpers():
        async def stop():
            pass
        return stop

    async def after_start(app):
        return {}
""")

_MINT_ECR = textwrap.dedent("""
    import base64
    from aiohttp import web
    from proxy.api.state import LIVE
    from proxy.credentials.value_types import DEFAULT_ENVIRONMENT

    async def fake_ecr(request):
        token = base64.b64encode(b"AWS:minted-password").decode()
        return web.json_response({"authorizationData": [{"authorizationToken": token, "expiresAt": 4102444800}]},
                                 content_type="application/x-amz-json-1.1")

    async def start_helpers():
        ecr = web.Application()
        ecr.router.add_post("/", fake_ecr)
        runner = web.AppRunner(ecr)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(sys.argv[3])).start()
        return runner.cleanup

    async def after_start(app):
        credentials = await app[LIVE].credentials(DEFAULT_ENVIRONMENT, sys.argv[4])
        return {"minted": [credentials.username, credentials.password], "boto3": "boto3" in sys.modules}
""")

_RUN = "asyncio.run(main(sys.argv[1], sys.argv[2]))\n"

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
# No AWS configuration or instance metadata of the machine running the tests may take part.
_AWS_ISOLATION = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                  "AWS_EC2_METADATA_DISABLED": "true"}


def _serve(program: str, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _SERVE + program + _RUN, *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **_AWS_ISOLATION}, cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serving_with_the_embedded_defaults_loads_no_cloud_sdk_cryptography_or_jinja(tmp_path: Path) -> None:
    result = _serve(_NOTHING_MORE, "", str(tmp_path / "data"))
    assert result["answered"] == 401  # the embedded defaults ask pulls for a token
    assert result["loaded_at_start"] == []


def test_an_ecr_credential_mints_through_boto3_loaded_on_first_use(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"registries": [{
        "address": ECR, "kind": "ecr", "access_key_id": "AKIAEXAMPLEPROXY0001",
        "secret_access_key": "example-secret-access-key", "aws_endpoint_url": f"http://127.0.0.1:{port}"}]}))
    result = _serve(_MINT_ECR, str(config), str(tmp_path / "data"), str(port), ECR)
    assert result["minted"] == ["AWS", "minted-password"]
    assert result["boto3"] is True
