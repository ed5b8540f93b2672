"""The secret key: a lost or wrong key stops start-up with a way out, and no new key is written over the secrets."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import trustme
import yaml

from .admin import Admin, new_token
from .proxyproc import REPO_ROOT, ProxyFactory, ProxyProcess
from .test_admin_cli import run_in_pty

TOKEN_ENV = "REGISTRY_PROXY_ADMIN_TOKEN"
PASSWORD = "sealed-" + new_token()
FROM_FILE = "from-the-file-" + new_token()


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m proxy ...` with none of the developer's REGISTRY_PROXY_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_PROXY_")}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, stdin=subprocess.DEVNULL if stdin is None else None, timeout=60,
                          env={**env, "PYTHONPATH": str(REPO_ROOT)})


def proxy_with_secrets(make_proxy: ProxyFactory) -> tuple[ProxyProcess, Admin, dict[str, Any]]:
    """A proxy holding a password and a client key stored through the API, and a credential from its file."""
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "ghcr.io", "username": "file-robot", "password": FROM_FILE}]},
                       env={TOKEN_ENV: token})
    admin = Admin(proxy.host, token)
    added = admin.add("quay.io", "robot", PASSWORD)
    pair = trustme.CA().issue_cert("client.example.com")
    admin.ok("PATCH", "/upstreams/registry.example.com:5000", {
        "client_cert": pair.cert_chain_pems[0].bytes().decode(), "client_key": pair.private_key_pem.bytes().decode()})
    return proxy, admin, added


def serve(proxy: ProxyProcess) -> subprocess.CompletedProcess[str]:
    """Start-up that is expected to fail before it serves."""
    return run("serve", "--config", str(proxy.config_path), cwd=proxy.base)


def test_a_lost_key_stops_start_up_naming_the_file_and_no_new_key_is_written(make_proxy: ProxyFactory) -> None:
    proxy, _, _ = proxy_with_secrets(make_proxy)
    key_file = proxy.data_dir.parent / "data.key"
    assert key_file.is_file()
    proxy.stop()
    key_file.unlink()

    result = serve(proxy)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"registry-proxy: no secret key: {key_file} does not exist and "
                           "$REGISTRY_PROXY_SECRET_KEY is not set, but the store "
                           f"{proxy.data_dir / 'state.db'} holds 2 secrets sealed with one."), line
    assert "secrets.key_file" in line and "registry-proxy secrets forget-undecryptable" in line
    assert line.endswith("No new key was written.")
    assert not key_file.exists()
    assert [*key_file.parent.rglob("*.key")] == []


def test_a_wrong_key_stops_start_up_naming_where_it_came_from(make_proxy: ProxyFactory) -> None:
    proxy, _, _ = proxy_with_secrets(make_proxy)
    key_file = proxy.data_dir.parent / "data.key"
    proxy.stop()
    other = base64.b64encode(os.urandom(32)).decode() + "\n"
    key_file.write_text(other)

    result = serve(proxy)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"registry-proxy: 2 secrets stored in {proxy.data_dir / 'state.db'} cannot be decrypted "
                           f"with the secret key from {key_file}."), line
    assert "forget-undecryptable" in line
    assert key_file.read_text() == other

    done = run("secrets", "forget-undecryptable", "--config", str(proxy.config_path), "--yes", cwd=proxy.base)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"These stored secrets cannot be decrypted with the key from {key_file}:"
    proxy.start()
    assert key_file.read_text() == other


def test_forget_undecryptable_lists_asks_clears_and_the_proxy_starts(make_proxy: ProxyFactory) -> None:
    proxy, admin, added = proxy_with_secrets(make_proxy)
    key_file = proxy.data_dir.parent / "data.key"
    proxy.stop()
    key_file.unlink()
    forget = ("secrets", "forget-undecryptable", "--config", str(proxy.config_path))

    # Without a terminal to ask on, and without --yes, nothing changes.
    refused = run(*forget, cwd=proxy.base)
    assert refused.returncode == 1
    assert refused.stderr == "registry-proxy: not a terminal to ask on; pass --yes to forget them\n"
    assert serve(proxy).returncode == 2

    done = run(*forget, "--yes", cwd=proxy.base)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"These stored secrets cannot be decrypted: there is no key at {key_file}."
    assert lines[1].split() == ["CREDENTIAL", "ADDRESS", "USERNAME", "SECRET"]
    assert lines[2].split() == [str(added["id"]), "quay.io", "robot", "password"]
    assert lines[3].split() == ["-", "registry.example.com:5000", "-", "client", "key", "(upstream)"]
    assert lines[4].startswith("Forgetting them deactivates")
    assert lines[5].startswith("Forgot 2.")
    # The file's credential is sealed again from the file: it is not listed.
    assert "ghcr.io" not in done.stdout and PASSWORD not in done.stdout + done.stderr

    again = run(*forget, "--yes", cwd=proxy.base)
    assert again.returncode == 0
    assert again.stdout == f"Nothing to forget: there is no key at {key_file}, and no stored secret needs one.\n"

    proxy.start()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    listed = {r["address"]: r for r in admin.registries()}
    assert (listed["quay.io"]["state"], listed["quay.io"]["in_use"]) == ("inactive", False)
    assert (listed["ghcr.io"]["state"], listed["ghcr.io"]["source"]) == ("active", "config")
    upstream = admin.ok("GET", "/upstreams/registry.example.com:5000")
    assert (upstream["client_cert"], upstream["client_key_set"]) == (None, False)
    # Entered again, the password is sealed with the new key and used.
    admin.ok("PATCH", f"/registries/{added['id']}", {"password": PASSWORD})
    assert admin.ok("POST", f"/registries/{added['id']}/activate")["in_use"] is True
    proxy.restart()
    assert {r["address"]: r["state"] for r in admin.registries()} == {"quay.io": "active", "ghcr.io": "active"}


def test_the_image_variable_places_the_key_unless_the_config_names_one(make_proxy: ProxyFactory,
                                                                        tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    variable = {"REGISTRY_PROXY_SECRET_KEY_FILE": str(volume / "secret.key")}
    proxy = make_proxy({}, env=variable, name="mounted")
    assert (volume / "secret.key").is_file()
    assert not (proxy.data_dir.parent / "data.key").exists()

    named = tmp_path / "named.key"
    config = {**proxy.config, "secrets": {"key_file": str(named)}}
    proxy.stop()
    proxy.config_path.write_text(yaml.safe_dump(config))
    (volume / "secret.key").unlink()
    proxy.start()
    assert named.is_file() and not (volume / "secret.key").exists()


def test_the_state_database_and_its_wal_are_private(make_proxy: ProxyFactory) -> None:
    # Under the usual umask 022, SQLite would create them 0644.
    token = new_token()
    proxy = make_proxy({}, env={TOKEN_ENV: token}, launcher=("sh", "-c", 'umask 022 && exec "$@"', "sh"))
    Admin(proxy.host, token).add("quay.io", "robot", PASSWORD)
    state = proxy.data_dir / "state.db"
    files = [state, state.with_name("state.db-wal"), state.with_name("state.db-shm")]
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {path.name: 0o600 for path in files}

    # A store from before keeps its files' modes no longer than the next start.
    proxy.stop()
    for path in files:
        if path.exists():
            path.chmod(0o644)
    proxy.start()
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files if path.exists()} == \
        {path.name: 0o600 for path in files if path.exists()}


def test_forget_undecryptable_asks_on_a_terminal_and_no_keeps_everything(make_proxy: ProxyFactory) -> None:
    proxy, _, _ = proxy_with_secrets(make_proxy)
    proxy.stop()
    (proxy.data_dir.parent / "data.key").unlink()
    argv = [sys.executable, "-m", "proxy", "secrets", "forget-undecryptable", "--config", str(proxy.config_path)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_PROXY_")},
           "PYTHONPATH": str(REPO_ROOT)}

    status, output = run_in_pty(argv, env, proxy.base, [(b"Forget them? [y/N] ", "n")])
    assert status == 1, output
    assert output.endswith("Nothing was changed.\n"), output
    assert serve(proxy).returncode == 2

    status, output = run_in_pty(argv, env, proxy.base, [(b"Forget them? [y/N] ", "y")])
    assert status == 0, output
    assert "Forgot 2." in output
    proxy.start()
