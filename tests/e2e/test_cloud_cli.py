"""`registry-proxy registries add|edit|show|list` for ECR and GCR credentials, against local stand-ins of the clouds.

The CLI runs as a subprocess against a real proxy; FakeEcr and
FakeGoogleTokenEndpoint mint the passwords that the token server in front of
the upstream registry accepts, so a 200 means the minted password was used.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path

import pytest

from .admin import new_token
from .cloud import AWS_ISOLATION, ECR, GAR, FakeEcr, google_account
from .http import get
from .proxyproc import ProxyFactory, ProxyProcess
from .test_admin_cli import Cli, parse_fields, parse_table, run_in_pty
from .tokenserver import TokenServer
from .upstream import Upstream

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_urlsafe(12)
OTHER_SECRET_KEY = "bPxRfiCYEXAMPLEKEY/" + secrets.token_urlsafe(12)
CLIENT_EMAIL = "puller@e2e-project.iam.gserviceaccount.com"
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"




def start(make_proxy: ProxyFactory, tmp_path: Path, registries: list[dict[str, str]]) -> Cli:
    token = new_token()
    proxy: ProxyProcess = make_proxy({"cache": {"tag_ttl": "0s"}, "registries": registries},
                                     env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
    return Cli(proxy, token, tmp_path)


def fail_line(cli: Cli, *args: str, status: int, stdin: str | None = None) -> str:
    """The one stderr line of a refused command; nothing may have been added."""
    line = cli.fail(*args, status=status, stdin=stdin)
    assert cli.table("registries", "list") == []
    return line


def test_ecr_with_an_access_key_from_stdin(registry: Upstream, short_tokens: TokenServer, make_proxy: ProxyFactory,
                                          tmp_path: Path) -> None:
    fake = FakeEcr(lambda password, _expires: short_tokens.set_login("AWS", password))
    try:
        cli = start(make_proxy, tmp_path, [{"address": ECR, "endpoint": registry.url, "token_realms": registry.token_realms}])
        path = f"/v2/{ECR}/private/app/manifests/1"
        assert get(cli.proxy.host, path).status == 401

        added = cli.fields("registries", "add", ECR, "--kind", "ecr", "--access-key-id", fake.access_key_id,
                           "--secret-access-key-stdin", "--aws-endpoint-url", fake.url, "--renew-margin", "10m",
                           "--email", "ops@example.com", stdin=SECRET_KEY + "\n")
        assert (added["kind"], added["username"], added["email"], added["in use"]) == \
            ("ecr", "AWS", "ops@example.com", "yes")
        assert (added["access_key_id"], added["aws_endpoint_url"]) == (fake.access_key_id, fake.url)
        assert added["role_arn"] == "-"
        assert added["renew_margin"] == "600 s (10 min)"

        assert get(cli.proxy.host, path).status == 200
        assert fake.mints == 1 and fake.calls[0]["signed_by"] == fake.access_key_id
        shown = cli.fields("registries", "show", added["id"])
        assert shown["last_result"] == "ok" and shown["failures"] == "0" and shown["mints"] == "1"
        # FakeEcr's tokens live 12 hours; renewal is 10 to 5 minutes before the end, at a random moment.
        assert re.fullmatch(rf"{ISO_TIME} \(in 11 h (59|58) min\)", shown["expires_at"]), shown
        assert re.fullmatch(rf"{ISO_TIME} \(in 11 h (4[89]|5[0-4]) min\)", shown["next_refresh"]), shown
        assert re.fullmatch(rf"{ISO_TIME} \(\d s ago\)", shown["minted_at"]), shown
        [row] = cli.table("registries", "list")
        assert (row["ID"], row["ADDRESS"], row["KIND"], row["USERNAME"]) == (added["id"], ECR, "ecr", "AWS")
        assert json.loads(cli.ok("registries", "show", added["id"], "--json"))["token"]["last_result"] == "ok"

        # The secret is write-only, so an edit must send it again; without a
        # terminal the command says how, before the proxy is asked to change anything.
        line = cli.fail("registries", "edit", added["id"], "--renew-margin", "300", status=2)
        assert "--secret-access-key-stdin" in line and line.endswith("(field: secret_access_key)")
        edited = cli.fields("registries", "edit", added["id"], "--renew-margin", "300", "--secret-access-key-stdin",
                            stdin=OTHER_SECRET_KEY)
        assert edited["renew_margin"] == "300 s (5 min)"
        assert (edited["access_key_id"], edited["aws_endpoint_url"]) == (fake.access_key_id, fake.url)
        line = cli.fail("registries", "edit", added["id"], "--password-stdin", stdin="x", status=2)
        assert line.endswith("(field: password)") and "kind ecr" in line
        assert get(cli.proxy.host, path).status == 200
        assert fake.calls[-1]["signed_by"] == fake.access_key_id

        # On a terminal the command asks for it, twice, with echo off.
        argv = [sys.executable, "-m", "proxy", "registries", "edit", added["id"]]
        prompt = f"Secret access key for credential {added['id']} at {ECR}: ".encode()
        assert cli.token is not None
        status, output = run_in_pty(argv, cli.env(cli.token), tmp_path,
                                    [(prompt, SECRET_KEY), (b"Repeat the secret access key: ", SECRET_KEY)])
        cli.outputs.append(output)
        assert status == 0, output
        assert "last_result:" in output

        cli.assert_nothing_leaked(SECRET_KEY, OTHER_SECRET_KEY, *short_tokens.users.values())
    finally:
        fake.stop()


@pytest.mark.parametrize("mode", ["access_token", "json_key"])
def test_gcr_with_a_key_file(registry: Upstream, short_tokens: TokenServer, make_proxy: ProxyFactory,
                             tmp_path: Path, mode: str) -> None:
    with google_account(short_tokens, mode) as (endpoint, key_json):
        key_file = tmp_path / "key.json"
        key_file.write_text(key_json)
        cli = start(make_proxy, tmp_path, [{"address": GAR, "endpoint": registry.url, "token_realms": registry.token_realms}])
        path = f"/v2/{GAR}/private/app/manifests/1"
        assert get(cli.proxy.host, path).status == 401

        added = cli.fields("registries", "add", GAR, "--kind", "gcr", "--json-key-file", str(key_file),
                           "--mode", mode)
        user = "_json_key" if mode == "json_key" else "oauth2accesstoken"
        assert (added["kind"], added["mode"], added["client_email"], added["username"]) == \
            ("gcr", mode, CLIENT_EMAIL, user)
        assert added["renew_margin"] == "- (last quarter of the token's lifetime)"
        assert get(cli.proxy.host, path).status == 200
        shown = cli.fields("registries", "show", added["id"])
        assert shown["last_result"] == "ok"
        if mode == "access_token":
            assert [g["grant_type"] for g in endpoint.grants] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            assert re.fullmatch(rf"{ISO_TIME} \(in (59|58) min\)", shown["expires_at"]), shown
        else:
            # The key itself is the password: nothing to ask Google, nothing expires.
            assert endpoint.grants == []
            assert shown["expires_at"] == "- (no expiry given)"

        line = cli.fail("registries", "edit", added["id"], "--mode", mode, status=2)
        assert "--json-key-file" in line and line.endswith("(field: json_key)")
        edited = cli.fields("registries", "edit", added["id"], "--json-key-stdin", "--email", "gcp@example.com",
                            stdin=key_json)
        assert (edited["mode"], edited["client_email"], edited["email"]) == (mode, CLIENT_EMAIL, "gcp@example.com")
        assert get(cli.proxy.host, path).status == 200

        cli.assert_nothing_leaked("PRIVATE KEY", json.loads(key_json)["private_key_id"],
                                  *short_tokens.users.values())


def test_bad_inputs_are_one_line_naming_the_field(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    cli = start(make_proxy, tmp_path, [])
    # Refused by the proxy: exit status 1.
    line = fail_line(cli, "registries", "add", "quay.io", "--kind", "ecr", status=1)
    assert "not an ECR registry address" in line and line.endswith("(field: address)")
    no_email = tmp_path / "no-email.json"
    no_email.write_text(json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nx",
                                    "token_uri": "https://oauth2.googleapis.com/token"}))
    assert fail_line(cli, "registries", "add", GAR, "--kind", "gcr", "--json-key-file", str(no_email), status=1) == \
        "registry-proxy: json_key has no client_email (field: json_key)"
    line = fail_line(cli, "registries", "add", ECR, "--kind", "ecr", "--access-key-id", "AKIAEXAMPLEPROXY0001",
                     "--role-arn", "admin", "--secret-access-key-stdin", stdin=SECRET_KEY, status=1)
    assert line.endswith("(field: role_arn)")
    line = fail_line(cli, "registries", "add", ECR, "--kind", "ecr", "--renew-margin", "13h", status=1)
    assert line.endswith("(field: renew_margin)")

    # Refused by the command line before anything is read or sent: exit status 2.
    line = fail_line(cli, "registries", "add", ECR, "--kind", "ecr", "--secret-access-key-stdin", stdin=SECRET_KEY,
                     status=2)
    assert "--access-key-id" in line and line.endswith("(field: access_key_id)")
    line = fail_line(cli, "registries", "add", ECR, "--kind", "ecr", "--access-key-id", "AKIAEXAMPLEPROXY0001",
                     status=2)
    assert "--secret-access-key-stdin" in line and line.endswith("(field: secret_access_key)")
    assert fail_line(cli, "registries", "add", ECR, "--kind", "ecr", "--username", "AWS", status=2) == \
        "registry-proxy: --username does not apply to --kind ecr; it is for --kind basic (field: username)"
    line = fail_line(cli, "registries", "add", "quay.io", "--username", "robot", "--role-arn",
                     "arn:aws:iam::123456789012:role/x", "--password-stdin", stdin="pw", status=2)
    assert line.endswith("(field: role_arn)") and "--kind basic" in line
    assert fail_line(cli, "registries", "add", GAR, "--kind", "gcr", "--access-key-id", "AKIAEXAMPLEPROXY0001",
                     status=2).endswith("(field: access_key_id)")
    assert fail_line(cli, "registries", "add", "quay.io", "--password-stdin", stdin="pw", status=2).endswith(
        "(field: username)")
    missing = tmp_path / "missing.json"
    assert fail_line(cli, "registries", "add", GAR, "--kind", "gcr", "--json-key-file", str(missing), status=2) == \
        f"registry-proxy: cannot read --json-key-file {missing}: No such file or directory (field: json_key)"
    assert fail_line(cli, "registries", "add", GAR, "--kind", "gcr", "--json-key-stdin", stdin=" \n",
                     status=1).endswith("(field: json_key)")
    # argparse's own checks: usage and the error, exit status 2.
    result = cli.run("registries", "add", GAR, "--kind", "gcr", "--mode", "password")
    assert result.returncode == 2 and "invalid choice: 'password'" in result.stderr
    result = cli.run("registries", "add", ECR, "--kind", "ecr", "--renew-margin", "soon")
    assert result.returncode == 2 and "'soon' is not a number of seconds" in result.stderr

    # No key at all: the proxy uses the default AWS chain, and says so.
    added = cli.fields("registries", "add", ECR, "--kind", "ecr")
    assert added["access_key_id"] == "- (default AWS credential chain)"
    assert (added["minted_at"], added["expires_at"], added["last_result"]) == \
        ("- (never)", "- (not minted yet)", "never minted")
    line = cli.fail("registries", "edit", added["id"], "--secret-access-key-stdin", stdin=SECRET_KEY, status=2)
    assert line.endswith("(field: access_key_id)")
    basic = cli.fields("registries", "add", "quay.io", "--username", "robot", "--password-stdin", stdin="pw\n")
    assert basic["kind"] == "basic" and "token" not in basic and "access_key_id" not in basic
    assert {row["ADDRESS"]: row["KIND"] for row in parse_table(cli.ok("registries", "list"))} == \
        {ECR: "ecr", "quay.io": "basic"}
    assert parse_fields(cli.ok("registries", "show", basic["id"]))["username"] == "robot"
    cli.assert_nothing_leaked(SECRET_KEY)
