"""`registry-proxy environments|keys` and `registries --environment`, run as subprocesses against the real proxy."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .admin import new_token
from .http import get
from .proxyproc import ProxyFactory
from .test_admin_cli import PASSWORD, TOKEN_ENV, Cli, parse_fields, parse_table

ENVIRONMENT_COLUMNS = ["NAME", "ANONYMOUS PULL", "ANONYMOUS FROM", "REGISTRIES", "KEYS", "SOURCE", "CREATED"]
KEY_COLUMNS = ["ID", "SOURCE", "CREATED", "LAST USED"]


@pytest.fixture
def cli(make_proxy: ProxyFactory, tmp_path: Path) -> Iterator[Cli]:
    token = new_token()
    runner = Cli(make_proxy({}, env={TOKEN_ENV: token}), token, tmp_path)
    yield runner
    runner.assert_nothing_leaked(PASSWORD, token)


def add_key(cli: Cli, *args: str) -> tuple[str, str]:
    """`keys add ...` as a script runs it: stdout is the answer, stderr says the secret is shown once."""
    result = cli.run("keys", "add", *args)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout) if "--json" in args else parse_fields(result.stdout)
    assert result.stderr == (f"note: this is the only time the secret of pull key {answer['id']} is shown; the proxy "
                             "keeps only a hash of it. Clients log in with the id as user name and the secret as "
                             "password.\n")
    return answer["id"], answer["secret"]


def v2_status(cli: Cli, key_id: str, secret: str) -> int:
    """What /v2/ answers a client logging in with the key, as `docker login` would."""
    login = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    return get(cli.proxy.host, "/v2/", Authorization=f"Basic {login}").status


def test_add_list_show_set_and_delete_an_environment(cli: Cli) -> None:
    output = cli.ok("environments", "list")
    assert re.split(r" {2,}", output.splitlines()[0]) == ENVIRONMENT_COLUMNS
    assert [row["NAME"] for row in parse_table(output)] == ["default"]

    added = cli.fields("environments", "add", "team-a", "--anonymous-pull", "--anonymous-from", "10.0.0.0/8",
                       "--anonymous-from", "192.168.1.7, fd00::/8")
    assert added == {"name": "team-a", "anonymous pull": "yes",
                     "anonymous from": "10.0.0.0/8, 192.168.1.7/32, fd00::/8", "registries": "0", "keys": "0",
                     "source": "api", "created": added["created"], "updated": added["updated"]}
    assert cli.fields("environments", "show", "team-a") == added
    rows = {row["NAME"]: row for row in cli.table("environments", "ls")}
    assert rows["team-a"] == {"NAME": "team-a", "ANONYMOUS PULL": "yes",
                              "ANONYMOUS FROM": "10.0.0.0/8, 192.168.1.7/32, fd00::/8", "REGISTRIES": "0", "KEYS": "0",
                              "SOURCE": "api", "CREATED": added["created"]}

    # Only what is given changes; no networks with anonymous pulls on means from anywhere.
    changed = cli.fields("environments", "set", "team-a", "--no-anonymous-from")
    assert (changed["anonymous pull"], changed["anonymous from"]) == ("yes", "anywhere")
    changed = cli.fields("environments", "set", "team-a", "--no-anonymous-pull")
    assert (changed["anonymous pull"], changed["anonymous from"]) == ("no", "-")
    changed = cli.fields("environments", "set", "team-a", "--anonymous-from", "10.1.0.0/16")
    assert (changed["anonymous pull"], changed["anonymous from"]) == ("no", "10.1.0.0/16")
    assert changed["created"] == added["created"]
    assert cli.fields("environments", "show", "team-a") == changed
    assert "nothing to change" in cli.fail("environments", "set", "team-a", status=2)

    shown = json.loads(cli.ok("environments", "show", "team-a", "--json"))
    assert shown["anonymous_from"] == ["10.1.0.0/16"] and shown["anonymous_pull"] is False
    assert json.loads(cli.ok("environments", "list", "--json"))["environments"][-1] == shown

    # While it has a key it is kept, and the refusal names this command's way out.
    add_key(cli, "team-a")
    assert cli.fail("environments", "delete", "team-a") == (
        "registry-proxy: environment 'team-a' still has 1 pull key: remove them first, or pass --force to delete "
        "them with it (field: name)")
    assert cli.fields("environments", "show", "team-a")["keys"] == "1"
    assert cli.ok("environments", "delete", "team-a", "--force") == "deleted environment team-a with its 1 pull key\n"
    assert cli.fail("environments", "show", "team-a") == "registry-proxy: no environment 'team-a' (field: name)"
    assert [row["NAME"] for row in cli.table("environments", "list")] == ["default"]

    # Without keys or credentials no --force is needed; default is never deleted.
    cli.ok("environments", "add", "team-b")
    assert cli.ok("environments", "rm", "team-b") == "deleted environment team-b\n"
    assert "default environment cannot be deleted" in cli.fail("environments", "delete", "default", "--force")
    assert cli.ok("environments", "add", "team-c", "--json").startswith("{")
    assert cli.ok("environments", "delete", "team-c", "--json") == ""


def test_a_pull_key_secret_is_printed_once_and_works_until_revoked(cli: Cli) -> None:
    cli.ok("environments", "add", "team-a")
    made_up, made_up_secret = add_key(cli, "team-a")
    assert made_up.startswith("pk-") and len(made_up_secret) >= 16
    chosen, chosen_secret = add_key(cli, "team-a", "--id", "ci-runner", "--json")
    assert chosen == "ci-runner"
    # The printed secrets are the keys' own: the proxy lets them in.
    assert v2_status(cli, made_up, made_up_secret) == 200
    assert v2_status(cli, chosen, chosen_secret) == 200

    output = cli.ok("keys", "list", "team-a")
    assert re.split(r" {2,}", output.splitlines()[0]) == KEY_COLUMNS
    rows = {row["ID"]: row for row in parse_table(output)}
    assert set(rows) == {made_up, chosen}
    assert rows[chosen]["SOURCE"] == "api" and rows[chosen]["CREATED"] != "-"
    listed = json.loads(cli.ok("keys", "list", "team-a", "--json"))["keys"]
    assert {key["id"] for key in listed} == {made_up, chosen}
    assert all("secret" not in key for key in listed)
    assert cli.fields("environments", "show", "team-a")["keys"] == "2"

    assert cli.ok("keys", "revoke", "team-a", chosen) == "revoked pull key ci-runner of environment team-a\n"
    assert [row["ID"] for row in cli.table("keys", "ls", "team-a")] == [made_up]
    assert v2_status(cli, chosen, chosen_secret) == 401
    assert v2_status(cli, made_up, made_up_secret) == 200
    assert cli.fail("keys", "revoke", "team-a", chosen) == \
        "registry-proxy: environment 'team-a' has no pull key 'ci-runner' (field: id)"
    cli.ok("keys", "rm", "team-a", made_up)
    assert cli.table("keys", "list", "team-a") == []

    # Each secret appeared once, in the answer to its own `keys add`, and never in the proxy's log.
    for secret in (made_up_secret, chosen_secret):
        assert sum(output.count(secret) for output in cli.outputs) == 1
        assert secret not in cli.proxy.log_text()


def test_registry_credentials_land_in_their_environment(cli: Cli) -> None:
    cli.ok("environments", "add", "team-a")
    team = cli.add("quay.io", "robot", PASSWORD, "--environment", "team-a")
    assert team["environment"] == "team-a"
    shared = cli.add("quay.io", "robot2")
    assert shared["environment"] == "default"
    # Each environment has its own credential in use for an address.
    assert team["in use"] == shared["in use"] == "yes"
    assert cli.fields("registries", "show", team["id"]) == team

    rows = {row["ID"]: row for row in cli.table("registries", "list")}
    assert {key: row["ENVIRONMENT"] for key, row in rows.items()} == {team["id"]: "team-a", shared["id"]: "default"}
    assert rows[team["id"]]["IN USE"] == rows[shared["id"]]["IN USE"] == "yes"
    only = cli.table("registries", "list", "--environment", "team-a")
    assert [(row["ID"], row["USERNAME"], row["ENVIRONMENT"]) for row in only] == [(team["id"], "robot", "team-a")]
    assert [row["ID"] for row in cli.table("registries", "ls", "--environment", "default")] == [shared["id"]]
    listed = json.loads(cli.ok("registries", "list", "--environment", "team-a", "--json"))["registries"]
    assert [(r["id"], r["environment"]) for r in listed] == [(int(team["id"]), "team-a")]
    assert cli.fields("environments", "show", "team-a")["registries"] == "1"

    # An environment that does not exist is named as such, not listed as empty, and
    # refused before a password is read.
    cli.ok("environments", "add", "team-b")
    assert cli.table("registries", "list", "--environment", "team-b") == []
    missing = "registry-proxy: no environment 'team-z': create it first with 'environments add' (field: environment)"
    assert cli.fail("registries", "list", "--environment", "team-z") == missing
    assert cli.fail("registries", "add", "quay.io", "--username", "x", "--environment", "team-z",
                    "--password-stdin", stdin=PASSWORD) == missing
    assert len(cli.table("registries", "list")) == 2

    line = cli.fail("environments", "delete", "team-a")
    assert "still has 1 registry credential:" in line and "--force" in line
    assert cli.ok("environments", "delete", "team-a", "--force") == \
        "deleted environment team-a with its 1 registry credential\n"
    assert [row["ID"] for row in cli.table("registries", "list")] == [shared["id"]]


def test_refusals_name_the_field(cli: Cli) -> None:
    line = cli.fail("environments", "add", "Team_A")
    assert line.startswith("registry-proxy: name 'Team_A' is not an environment name.")
    assert line.endswith("(field: name)")
    line = cli.fail("environments", "add", "team-a", "--anonymous-pull", "--anonymous-from", "10.0.0.0/8,10.0.0.0/33")
    assert "'10.0.0.0/33'" in line and line.endswith("(field: anonymous_from)")
    assert cli.fail("environments", "add", "team-a", "--anonymous-from", "10.0.0.0/8,").endswith(
        "(field: anonymous_from)")
    assert [row["NAME"] for row in cli.table("environments", "list")] == ["default"]

    cli.ok("environments", "add", "team-a")
    assert cli.fail("environments", "add", "team-a") == \
        "registry-proxy: environment 'team-a' already exists (field: name)"
    assert cli.fail("environments", "set", "team-a", "--anonymous-from", "not-a-network").endswith(
        "(field: anonymous_from)")
    assert cli.fail("environments", "set", "nope", "--anonymous-pull").endswith("(field: name)")
    assert cli.fail("environments", "delete", "nope").endswith("(field: name)")
    assert cli.fail("keys", "list", "nope") == "registry-proxy: no environment 'nope' (field: name)"
    assert cli.fail("keys", "add", "nope").endswith("(field: name)")
    line = cli.fail("keys", "add", "team-a", "--id", "x")
    assert line.startswith("registry-proxy: id 'x' is not a key id.") and line.endswith("(field: id)")
    add_key(cli, "team-a", "--id", "ci-runner")
    assert cli.fail("keys", "add", "team-a", "--id", "ci-runner") == \
        "registry-proxy: a pull key with id 'ci-runner' already exists (field: id)"
    # A key is revoked through its own environment only.
    cli.ok("environments", "add", "team-b")
    assert cli.fail("keys", "revoke", "team-b", "ci-runner").endswith("(field: id)")
    assert [row["ID"] for row in cli.table("keys", "list", "team-a")] == ["ci-runner"]

    # An empty name or id would make another URL: argparse stops it before any request.
    for args in (("environments", "show", ""), ("keys", "list", " "), ("keys", "revoke", "team-a", ""),
                 ("registries", "list", "--environment", "")):
        result = cli.run(*args)
        assert result.returncode == 2 and "must not be empty" in result.stderr, (args, result.stderr)
