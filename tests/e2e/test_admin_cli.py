"""The admin command line (`registry-proxy registries|settings`) run as a subprocess against the real proxy."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .admin import new_token
from .http import get
from .images import build_image, push
from .proxyproc import REPO_ROOT, ProxyFactory, ProxyProcess
from .tools import free_port
from .upstream import Upstream

UpstreamFactory = Callable[..., Upstream]

TOKEN_ENV = "REGISTRY_PROXY_ADMIN_TOKEN"
# A space inside and at the end: --password-stdin must drop only the newline.
PASSWORD = "cli Pa55word " + new_token() + " "
OTHER_PASSWORD = "cli-other-" + new_token()
REGISTRY_COLUMNS = ["ID", "ADDRESS", "ENVIRONMENT", "KIND", "USERNAME", "EMAIL", "STATE", "IN USE", "SOURCE",
                    "CREATED"]


class Cli:
    """Runs `python -m proxy ...` as an operator would, and keeps every output for the leak check."""

    def __init__(self, proxy: ProxyProcess, token: str | None, cwd: Path) -> None:
        self.proxy = proxy
        self.token = token
        self.cwd = cwd
        self.outputs: list[str] = []

    def env(self, token: str | None) -> dict[str, str]:
        # Nothing from the developer's own environment may point the CLI elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_PROXY_")}
        env.update({"PYTHONPATH": str(REPO_ROOT), "REGISTRY_PROXY_URL": self.proxy.url})
        if token is not None:
            env[TOKEN_ENV] = token
        return env

    def run(self, *args: str, stdin: str | None = None, token: str | None = "") -> subprocess.CompletedProcess[str]:
        """`token` is put in $REGISTRY_PROXY_ADMIN_TOKEN: "" means the right one, None means none at all."""
        token = self.token if token == "" else token
        result = subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL if stdin is None else None, timeout=60, cwd=self.cwd,
                                env=self.env(token))
        self.outputs.append(result.stdout + result.stderr)
        return result

    def ok(self, *args: str, **kwargs: Any) -> str:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert result.stderr == "", result.stderr
        return result.stdout

    def fail(self, *args: str, status: int = 1, **kwargs: Any) -> str:
        """The one stderr line of a failed command."""
        result = self.run(*args, **kwargs)
        assert result.returncode == status, (args, result.returncode, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert result.stdout == ""
        assert lines[0].startswith("registry-proxy: ")
        return lines[0]

    def fields(self, *args: str, **kwargs: Any) -> dict[str, str]:
        return parse_fields(self.ok(*args, **kwargs))

    def table(self, *args: str) -> list[dict[str, str]]:
        return parse_table(self.ok(*args))

    def add(self, address: str, username: str, password: str = PASSWORD, *extra: str) -> dict[str, str]:
        return self.fields("registries", "add", address, "--username", username, *extra, "--password-stdin",
                           stdin=password + "\n")

    def assert_nothing_leaked(self, *secrets: str) -> None:
        log = self.proxy.log_text()
        for secret in secrets:
            assert not any(secret in output for output in self.outputs)
            assert secret not in log


def parse_fields(text: str) -> dict[str, str]:
    pairs = [line.split(":", 1) for line in text.splitlines()]
    return {key: value.strip() for key, value in pairs}


def parse_table(text: str) -> list[dict[str, str]]:
    """Cut rows at the header's column starts, so misaligned columns show up as garbled cells."""
    header, *rows = text.splitlines()
    names = re.split(r" {2,}", header.strip())
    starts = [header.index(name) for name in names]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{name: row[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)} for row in rows]


@pytest.fixture
def cli(make_proxy: ProxyFactory, tmp_path: Path) -> Iterator[Cli]:
    token = new_token()
    runner = Cli(make_proxy({}, env={TOKEN_ENV: token}), token, tmp_path)
    yield runner
    runner.assert_nothing_leaked(PASSWORD, OTHER_PASSWORD, token)


def test_add_then_list_and_a_newer_credential_takes_over(cli: Cli) -> None:
    first = cli.add("quay.io", "robot", PASSWORD, "--email", "ops@example.com")
    assert first["address"] == "quay.io" and first["username"] == "robot" and first["email"] == "ops@example.com"
    assert (first["state"], first["in use"], first["source"]) == ("active", "yes", "api")
    assert "password" not in first

    output = cli.ok("registries", "list")
    assert re.split(r" {2,}", output.splitlines()[0]) == REGISTRY_COLUMNS
    assert parse_table(output) == [{"ID": first["id"], "ADDRESS": "quay.io", "ENVIRONMENT": "default", "KIND": "basic",
                                    "USERNAME": "robot", "EMAIL": "ops@example.com", "STATE": "active", "IN USE": "yes",
                                    "SOURCE": "api", "CREATED": first["created"]}]

    second = cli.add("quay.io", "robot2", OTHER_PASSWORD)
    assert second["in use"] == "yes"
    other = cli.add("ghcr.io", "someone", OTHER_PASSWORD)
    rows = {row["ID"]: row for row in cli.table("registries", "ls")}
    assert rows[first["id"]]["IN USE"] == "no" and rows[first["id"]]["STATE"] == "active"
    assert rows[second["id"]]["IN USE"] == "yes"
    assert rows[other["id"]]["IN USE"] == "yes"
    assert rows[first["id"]]["EMAIL"] == "ops@example.com"
    assert rows[second["id"]]["EMAIL"] == "-"


def test_show_and_edit(cli: Cli) -> None:
    added = cli.add("quay.io", "robot")
    shown = cli.fields("registries", "show", added["id"])
    assert shown == added

    edited = cli.fields("registries", "edit", added["id"], "--username", "robot-2", "--email", "new@example.com",
                        "--password-stdin", stdin=OTHER_PASSWORD)
    assert (edited["username"], edited["email"], edited["address"]) == ("robot-2", "new@example.com", "quay.io")
    assert edited["created"] == added["created"]
    assert cli.fields("registries", "show", added["id"]) == edited
    # Naming the current address is allowed; it is how scripts say "this one".
    cli.ok("registries", "edit", added["id"], "--address", "quay.io", "--password-stdin", stdin=OTHER_PASSWORD)

    line = cli.fail("registries", "edit", added["id"], "--address", "ghcr.io", "--password-stdin",
                    stdin=OTHER_PASSWORD)
    assert line.startswith("registry-proxy: the address of a credential cannot change")
    assert line.endswith("(field: address)")
    assert cli.fields("registries", "show", added["id"])["address"] == "quay.io"

    # The id is checked before a password is asked for.
    assert cli.fail("registries", "edit", "999") == "registry-proxy: no registry credential with id '999' (field: id)"
    # Without a terminal there is nobody to ask, so the command says what to do instead.
    line = cli.fail("registries", "edit", added["id"], "--username", "x", status=2)
    assert "--password-stdin" in line
    assert cli.fail("registries", "edit", added["id"], "--password-stdin", stdin="\n") == \
        "registry-proxy: the password read from stdin is empty (field: password)"
    assert cli.fields("registries", "show", added["id"])["username"] == "robot-2"


def test_deactivate_activate_and_rm(cli: Cli) -> None:
    old = cli.add("quay.io", "old")
    new = cli.add("quay.io", "new")

    off = cli.fields("registries", "deactivate", new["id"])
    assert (off["state"], off["in use"]) == ("inactive", "no")
    rows = {row["ID"]: row for row in cli.table("registries", "list")}
    assert (rows[old["id"]]["STATE"], rows[old["id"]]["IN USE"]) == ("active", "yes")
    assert (rows[new["id"]]["STATE"], rows[new["id"]]["IN USE"]) == ("inactive", "no")

    on = cli.fields("registries", "activate", new["id"])
    assert (on["state"], on["in use"]) == ("active", "yes")
    assert cli.fields("registries", "show", old["id"])["in use"] == "no"

    assert cli.ok("registries", "rm", new["id"]) == f"removed registry credential {new['id']}\n"
    assert [row["ID"] for row in cli.table("registries", "list")] == [old["id"]]
    assert cli.fields("registries", "show", old["id"])["in use"] == "yes"
    assert cli.fail("registries", "show", new["id"]).endswith("(field: id)")
    assert cli.fail("registries", "rm", new["id"]).endswith("(field: id)")
    # Not a number: argparse stops it before any request.
    result = cli.run("registries", "rm", "quay.io")
    assert result.returncode == 2 and "is not a credential id" in result.stderr


def test_settings_get_and_set(cli: Cli) -> None:
    assert cli.table("settings", "get") == [
        {"NAME": "registry.default", "VALUE": "docker.io", "SOURCE": "default"},
        {"NAME": "registry.whitelist", "VALUE": "-", "SOURCE": "default"}]
    assert cli.fields("settings", "get", "registry.default") == {
        "name": "registry.default", "value": "docker.io", "source": "default", "updated": "-"}

    # Allowed, but unprefixed pulls would now fail: said on stderr, not refused.
    result = cli.run("settings", "set", "registry.whitelist", "quay.io")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warning: the default registry docker.io is not in registry.whitelist: "
                             "unprefixed pulls will now fail\n")
    assert parse_fields(result.stdout)["value"] == "quay.io"
    assert parse_fields(result.stdout)["source"] == "api"

    changed = cli.fields("settings", "set", "registry.whitelist", "docker.io,  quay.io")
    assert (changed["value"], changed["source"]) == ("docker.io, quay.io", "api")

    line = cli.fail("settings", "set", "registry.whitelist", "quay.io, http://ghcr.io")
    assert "drop the scheme" in line and line.endswith("(field: value)")
    assert cli.fail("settings", "set", "registry.default", "Quay.io").endswith("(field: value)")
    assert cli.fail("settings", "get", "registry.nope").endswith("(field: name)")
    assert cli.fields("settings", "get", "registry.whitelist")["value"] == "docker.io, quay.io"

    assert cli.fields("settings", "set", "registry.default", "quay.io")["value"] == "quay.io"
    assert cli.fields("settings", "set", "registry.whitelist", "")["value"] == "-"
    assert {row["NAME"]: row["SOURCE"] for row in cli.table("settings", "get")} == {
        "registry.default": "api", "registry.whitelist": "api"}


def test_json_output_is_the_api_json(cli: Cli) -> None:
    added = json.loads(cli.ok("registries", "add", "quay.io", "--username", "robot", "--json", "--password-stdin",
                              stdin=PASSWORD))
    assert added["address"] == "quay.io" and added["in_use"] is True and "password" not in added
    listed = json.loads(cli.ok("registries", "list", "--json"))
    assert listed == {"registries": [added]}
    assert json.loads(cli.ok("registries", "show", str(added["id"]), "--json")) == added
    assert json.loads(cli.ok("registries", "deactivate", str(added["id"]), "--json"))["in_use"] is False
    settings = json.loads(cli.ok("settings", "get", "--json"))
    assert [s["name"] for s in settings["settings"]] == ["registry.default", "registry.whitelist"]
    assert json.loads(cli.ok("settings", "get", "registry.default", "--json"))["source"] == "default"

    result = cli.run("settings", "set", "registry.whitelist", "quay.io", "--json")
    assert result.returncode == 0
    answer = json.loads(result.stdout)
    assert answer["warnings"] and result.stderr == f"warning: {answer['warnings'][0]}\n"
    # DELETE answers 204 without a body: nothing to print.
    assert cli.ok("registries", "rm", str(added["id"]), "--json") == ""


def test_token_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    wrong = "wrong-" + new_token()
    line = cli.fail("registries", "list", token=wrong)
    assert "refused the admin token" in line and cli.proxy.url in line
    assert wrong not in "".join(cli.outputs)
    assert cli.fail("settings", "get", "--token", wrong) == line

    line = cli.fail("registries", "list", token=None, status=2)
    assert "--token-file" in line and TOKEN_ENV in line and "admin-token" in line
    missing = tmp_path / "no-such-token"
    assert cli.fail("registries", "list", "--token-file", str(missing), token=None, status=2) == \
        f"registry-proxy: cannot read the token file {missing}: No such file or directory"

    assert cli.token is not None
    token_file = tmp_path / "token"
    token_file.write_text(cli.token + "\n")
    # --token-file wins over the environment, and the token in it works.
    assert cli.table("settings", "get", "--token-file", str(token_file))[0]["NAME"] == "registry.default"
    token_file.write_text(wrong)
    assert "refused the admin token" in cli.fail("settings", "get", "--token-file", str(token_file))


def test_generated_token_file_works(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    # An empty variable makes the proxy generate <data_dir>/admin-token.
    proxy = make_proxy({}, env={TOKEN_ENV: ""})
    runner = Cli(proxy, None, tmp_path)
    token_file = proxy.data_dir / "admin-token"
    rows = runner.table("settings", "get", "--token-file", str(token_file))
    assert [row["NAME"] for row in rows] == ["registry.default", "registry.whitelist"]
    runner.assert_nothing_leaked(token_file.read_text().strip())


def test_unreachable_proxy_is_one_line(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.fail("registries", "list", "--url", url) == \
        f"registry-proxy: the proxy at {url} is not reachable: connection refused"
    line = cli.fail("settings", "get", "--url", "127.0.0.1:5000", status=2)
    assert "http://" in line


def test_settings_unset_goes_back_to_the_file_value_or_the_default(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    token = new_token()
    proxy = make_proxy({"settings": {"registry.default": "quay.io"}}, env={TOKEN_ENV: token})
    cli = Cli(proxy, token, tmp_path)
    cli.ok("settings", "set", "registry.default", "ghcr.io")
    cli.ok("settings", "set", "registry.whitelist", "ghcr.io, quay.io")

    unset = cli.fields("settings", "unset", "registry.default")
    assert (unset["value"], unset["source"]) == ("quay.io", "config")
    assert cli.fields("settings", "unset", "registry.whitelist") == {
        "name": "registry.whitelist", "value": "-", "source": "default", "updated": "-"}
    # Unsetting what the API never set changes nothing.
    assert cli.fields("settings", "unset", "registry.whitelist")["source"] == "default"
    proxy.restart()
    assert cli.table("settings", "get") == [
        {"NAME": "registry.default", "VALUE": "quay.io", "SOURCE": "config"},
        {"NAME": "registry.whitelist", "VALUE": "-", "SOURCE": "default"}]
    assert json.loads(cli.ok("settings", "unset", "registry.default", "--json"))["source"] == "config"
    assert cli.fail("settings", "unset", "registry.nope") == (
        "registry-proxy: no setting 'registry.nope'; settings: registry.default, registry.whitelist (field: name)")


def test_an_empty_default_registry_is_refused_with_the_way_back(cli: Cli) -> None:
    line = cli.fail("settings", "set", "registry.default", "")
    assert "``" not in line
    assert "registry.default cannot be empty" in line
    assert "`registry-proxy settings unset registry.default`" in line and line.endswith("(field: value)")
    assert cli.fields("settings", "get", "registry.default")["value"] == "docker.io"


def test_json_errors_are_json(cli: Cli) -> None:
    result = cli.run("settings", "get", "registry.nope", "--json")
    assert (result.returncode, result.stdout) == (1, "")
    assert json.loads(result.stderr) == {"error": {
        "code": "not_found", "message": "no setting 'registry.nope'; settings: registry.default, registry.whitelist",
        "field": "name", "status": 404}}

    result = cli.run("registries", "show", "99", "--json")
    assert result.returncode == 1 and json.loads(result.stderr)["error"]["status"] == 404

    url = f"http://127.0.0.1:{free_port()}"
    result = cli.run("registries", "list", "--json", "--url", url)
    assert (result.returncode, result.stdout) == (1, "")
    assert json.loads(result.stderr) == {"error": {
        "code": None, "message": f"the proxy at {url} is not reachable: connection refused", "field": None,
        "status": None}}


# Credentials that an upstream accepts: the stored password is exactly the one given.


def read_until(fd: int, marker: bytes, deadline: float) -> bytes:
    data = b""
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} within the time limit; got {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            break
        data += chunk
    return data


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path, answers: list[tuple[bytes, str]],
               timeout: float = 30) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal, typing each answer after its prompt appears."""
    master, slave = pty.openpty()
    try:
        # A new session has no controlling terminal, so getpass cannot open
        # the developer's /dev/tty and uses the pseudo-terminal on stdin.
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                start_new_session=True)
    finally:
        os.close(slave)
    deadline = time.monotonic() + timeout
    output = b""
    try:
        for prompt, answer in answers:
            output += read_until(master, prompt, deadline)
            os.write(master, answer.encode() + b"\n")
        output += read_until(master, b"\x00never\x00", deadline)
        status = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, output.decode(errors="replace").replace("\r\n", "\n")


def test_passwords_from_stdin_and_prompt_reach_the_upstream(make_upstream: UpstreamFactory, oci_layout: Path,
                                                             make_proxy: ProxyFactory, tmp_path: Path) -> None:
    upstream = make_upstream("htpasswd", auth="htpasswd", users={"alice": PASSWORD})
    for tag in ("1", "2"):
        build_image(oci_layout, tag)
        push(upstream, oci_layout, tag, "team/tool")
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "registry.example.com", "endpoint": upstream.url}]},
                       env={TOKEN_ENV: token})
    cli = Cli(proxy, token, tmp_path)
    manifest = "/v2/registry.example.com/team/tool/manifests/{}".format
    assert get(proxy.host, manifest("1")).status == 401

    added = cli.add("registry.example.com", "alice", PASSWORD)
    assert get(proxy.host, manifest("1")).status == 200
    cli.ok("registries", "rm", added["id"])
    assert get(proxy.host, manifest("2")).status == 401

    argv = [sys.executable, "-m", "proxy", "registries", "add", "registry.example.com", "--username", "alice"]
    prompt, again = b"Password for alice at registry.example.com: ", b"Repeat the password: "
    status, output = run_in_pty(argv, cli.env(token), tmp_path, [(prompt, PASSWORD + "x"), (again, PASSWORD)])
    cli.outputs.append(output)
    assert status == 1, output
    assert "registry-proxy: the two passwords differ; nothing was changed (field: password)" in output
    assert cli.table("registries", "list") == []

    status, output = run_in_pty(argv, cli.env(token), tmp_path, [(prompt, PASSWORD), (again, PASSWORD)])
    cli.outputs.append(output)
    assert status == 0, output
    assert re.search(r"^in use: +yes$", output, re.MULTILINE), output
    assert get(proxy.host, manifest("2")).status == 200
    # Typed with echo off: the terminal never showed it.
    cli.assert_nothing_leaked(PASSWORD, token)
