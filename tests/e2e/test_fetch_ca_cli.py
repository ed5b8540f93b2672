"""`registry-proxy registries fetch-ca` and `registry-proxy upstreams ...` against real TLS registries.

The proxy and the CLI run as separate processes, as an operator runs them;
every change must reach the next pull without a restart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import ssl
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from proxy.cli.certs import expiry, fingerprint

from .admin import new_token
from .http import Reply, get
from .images import build_image, push
from .proxyproc import ProxyFactory
from .test_admin_cli import TOKEN_ENV, Cli, run_in_pty
from .upstream import Upstream

UpstreamFactory = Callable[..., Upstream]
NAME = "registry.example.com"


def manifest_path(tag: str) -> str:
    return f"/v2/{NAME}/org/app/manifests/{tag}"


def seed(upstream: Upstream, layout: Path, *tags: str) -> dict[str, bytes]:
    manifests = {}
    for tag in tags:
        manifests[tag] = build_image(layout, tag, seed=tag.encode()).manifest_bytes
        push(upstream, layout, tag, "org/app")
    return manifests


def sha256_of(pem_file: Path | None) -> str:
    assert pem_file is not None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem_file.read_text())).hexdigest()


def colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2)).upper()


def assert_untrusted(reply: Reply) -> None:
    assert reply.status == 502, reply.body
    message = reply.error_message
    assert NAME in message and "unknown authority" in message and "fetch-ca" in message, message


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry-proxy: "), stderr
    return lines[0]


def stored_ca(cli: Cli) -> str:
    return cli.fields("upstreams", "show", NAME)["ca cert"]


@pytest.fixture
def self_signed(make_upstream: UpstreamFactory) -> Upstream:
    return make_upstream("tls", tls=True, self_signed=True)


def started(make_proxy: ProxyFactory, tmp_path: Path, config: dict[str, object] | None = None) -> Cli:
    token = new_token()
    return Cli(make_proxy(config or {}, env={TOKEN_ENV: token}), token, tmp_path)


def test_fetch_ca_pins_the_presented_certificate_without_a_restart(
        self_signed: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    manifests = seed(self_signed, oci_layout, "1")
    cli = started(make_proxy, tmp_path)
    shown = cli.fields("upstreams", "set", NAME, "--endpoint", self_signed.url)
    assert (shown["endpoint"], shown["ca cert"], shown["source"]) == (self_signed.url, "-", "api")
    assert_untrusted(get(cli.proxy.host, manifest_path("1")))
    fingerprint = sha256_of(self_signed.ca_file)

    # A pin that matches nothing presented: the chain is shown, nothing stored.
    wrong = secrets.token_hex(32)
    result = cli.run("registries", "fetch-ca", NAME, "--yes", "--fingerprint", wrong)
    assert result.returncode == 1
    assert one_line(result.stderr) == (f"registry-proxy: {NAME} presents no certificate with SHA-256 {colons(wrong)}; "
                                       "nothing was stored (field: fingerprint)")
    assert colons(fingerprint) in result.stdout
    assert stored_ca(cli) == "-"
    assert_untrusted(get(cli.proxy.host, manifest_path("1")))

    # --yes alone would trust whoever answers: refused before anything is fetched.
    result = cli.run("registries", "fetch-ca", NAME, "--yes")
    assert result.returncode == 2 and result.stdout == ""
    line = one_line(result.stderr)
    assert "--yes needs --fingerprint" in line and line.endswith("(field: fingerprint)")
    # No terminal to ask on and no --yes: the chain is shown so it can be compared, nothing stored.
    result = cli.run("registries", "fetch-ca", NAME)
    assert result.returncode == 2
    assert "stdin is not a terminal" in one_line(result.stderr) and "nothing was stored" in result.stderr
    assert colons(fingerprint) in result.stdout
    assert stored_ca(cli) == "-"

    # openssl's spelling, lowercased hex and a sha256: prefix all name the same certificate.
    output = cli.ok("registries", "fetch-ca", NAME, "--yes", "--fingerprint", f"sha256:{fingerprint}")
    chain, stored = output.rsplit("\n", 2)[0], output.splitlines()[-1]
    assert chain.splitlines() == [
        f"{NAME} presents at {self_signed.url} (not verified):",
        "[1] CN=self-signed 127.0.0.1  <CA>  <to be trusted>",
        "    issued by: itself",
        chain.splitlines()[3],
        f"    SHA-256:   {colons(fingerprint)}"]
    assert re.fullmatch(r"    expires:   \d{4}-\d\d-\d\d \d\d:\d\d UTC", chain.splitlines()[3])
    assert stored.startswith(f"stored as ca_cert for {NAME}: CN=self-signed 127.0.0.1, SHA256 {colons(fingerprint)}, "
                             "expires ")
    assert colons(fingerprint) in stored_ca(cli)
    reply = get(cli.proxy.host, manifest_path("1"))
    assert reply.status == 200 and reply.body == manifests["1"]

    # --json prints the stored upstream alone; the PEM is the registry's certificate.
    openssl_style = "SHA256 Fingerprint=" + colons(fingerprint)
    answer = json.loads(cli.ok("registries", "fetch-ca", NAME, "--yes", "--json", "--fingerprint", openssl_style))
    assert ssl.PEM_cert_to_DER_cert(answer["ca_cert"]) == ssl.PEM_cert_to_DER_cert(self_signed.ca_file.read_text())  # type: ignore[union-attr]
    assert [c["sha256"] for c in answer["ca_certificates"]] == [colons(fingerprint)]
    assert answer["insecure"] is False and answer["source"] == "api"


def test_fetch_ca_asks_on_the_terminal(self_signed: Upstream, oci_layout: Path, make_proxy: ProxyFactory,
                                       tmp_path: Path) -> None:
    manifests = seed(self_signed, oci_layout, "1")
    cli = started(make_proxy, tmp_path)
    cli.ok("upstreams", "set", NAME, "--endpoint", self_signed.url)
    fingerprint = colons(sha256_of(self_signed.ca_file))
    argv = [sys.executable, "-m", "proxy", "registries", "fetch-ca", NAME]
    question = f"Trust CN=self-signed 127.0.0.1 (SHA256 {fingerprint}) for {NAME}? [y/N] ".encode()

    status, output = run_in_pty(argv, cli.env(cli.token), tmp_path, [(question, "n")])
    assert status == 1, output
    assert f"SHA-256:   {fingerprint}" in output
    assert output.rstrip().endswith("registry-proxy: not trusted; nothing was stored")
    assert stored_ca(cli) == "-"
    assert_untrusted(get(cli.proxy.host, manifest_path("1")))

    # A pin on the terminal still asks, and "y" is the answer that stores.
    status, output = run_in_pty([*argv, "--fingerprint", fingerprint.lower()], cli.env(cli.token), tmp_path,
                                [(question, "y")])
    assert status == 0, output
    assert f"stored as ca_cert for {NAME}: CN=self-signed 127.0.0.1, SHA256 {fingerprint}" in output
    assert fingerprint in stored_ca(cli)
    assert get(cli.proxy.host, manifest_path("1")).body == manifests["1"]


def test_insecure_list_show_and_rm(self_signed: Upstream, oci_layout: Path, make_proxy: ProxyFactory,
                                   tmp_path: Path) -> None:
    manifests = seed(self_signed, oci_layout, "1", "2", "3")
    cli = started(make_proxy, tmp_path)
    cli.ok("upstreams", "set", NAME, "--endpoint", self_signed.url)
    assert cli.fields("upstreams", "set", NAME, "--insecure")["insecure"] == "yes"
    assert get(cli.proxy.host, manifest_path("1")).body == manifests["1"]

    # Only the options given change: the endpoint stays.
    shown = cli.fields("upstreams", "set", NAME, "--no-insecure")
    assert (shown["insecure"], shown["endpoint"]) == ("no", self_signed.url)
    assert_untrusted(get(cli.proxy.host, manifest_path("2")))

    cli.ok("upstreams", "set", "quay.io", "--ca-cert", str(self_signed.ca_file))
    assert cli.table("upstreams", "list") == [
        {"ADDRESS": "quay.io", "ALIAS": "-", "ENDPOINT": "https://quay.io", "INSECURE": "no", "CA CERTS": "1",
         "CA EXPIRES": cli.table("upstreams", "ls")[0]["CA EXPIRES"], "CLIENT CERT": "no", "SOURCE": "api"},
        {"ADDRESS": NAME, "ALIAS": "-", "ENDPOINT": self_signed.url, "INSECURE": "no", "CA CERTS": "-",
         "CA EXPIRES": "-", "CLIENT CERT": "no", "SOURCE": "api"}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cli.table("upstreams", "list")[0]["CA EXPIRES"])
    assert json.loads(cli.ok("upstreams", "list", "--json"))["upstreams"][1]["endpoint"] == self_signed.url
    assert cli.fields("upstreams", "set", "quay.io", "--no-ca-cert")["ca cert"] == "-"

    # fetch-ca warns that insecure still skips the check it just set up.
    cli.ok("upstreams", "set", NAME, "--insecure")
    result = cli.run("registries", "fetch-ca", NAME, "--yes", "--fingerprint", sha256_of(self_signed.ca_file))
    assert result.returncode == 0
    assert result.stderr == (f"warning: {NAME} is still insecure, so no certificate is checked; check them with "
                             f"'registry-proxy upstreams set {NAME} --no-insecure'\n")
    cli.ok("upstreams", "set", NAME, "--no-insecure")
    assert get(cli.proxy.host, manifest_path("3")).body == manifests["3"]

    assert cli.ok("upstreams", "rm", NAME) == f"removed the upstream settings for {NAME}\n"
    assert cli.fields("upstreams", "show", NAME) == {
        "address": NAME, "alias": "-", "endpoint": f"https://{NAME}", "insecure": "no", "ca cert": "-",
        "client cert": "-", "client key": "-", "source": "default"}
    assert cli.fail("upstreams", "rm", NAME) == f"registry-proxy: nothing is set for {NAME} (field: address)"
    assert cli.ok("upstreams", "rm", "quay.io", "--json") == ""
    assert cli.table("upstreams", "list") == []


def test_client_certificate_for_mutual_tls_is_never_shown(make_upstream: UpstreamFactory, oci_layout: Path,
                                                         make_proxy: ProxyFactory, tmp_path: Path) -> None:
    upstream = make_upstream("mtls", tls=True, client_ca=True)
    manifests = seed(upstream, oci_layout, "1", "2")
    assert upstream.client_files is not None and upstream.ca_file is not None
    cert, key = upstream.client_files
    key_pem = key.read_text()
    cli = started(make_proxy, tmp_path)
    cli.ok("upstreams", "set", NAME, "--endpoint", upstream.url, "--ca-cert", str(upstream.ca_file))
    refused = get(cli.proxy.host, manifest_path("1"))
    assert refused.status in (502, 503) and NAME in refused.error_message

    # Cert and key in one file, as some tools write them: only the certificate is sent as client_cert.
    combined = tmp_path / "client.pem"
    combined.write_text(key_pem + cert.read_text())
    shown = cli.fields("upstreams", "set", NAME, "--client-cert", str(combined), "--client-key", str(key))
    assert shown["client cert"] == f"set, SHA256 {colons(sha256_of(cert))}"
    assert shown["client key"] == "set"
    assert get(cli.proxy.host, manifest_path("1")).body == manifests["1"]
    answer = json.loads(cli.ok("upstreams", "show", NAME, "--json"))
    assert answer["client_key_set"] is True and "client_key" not in answer
    assert "PRIVATE KEY" not in json.dumps(answer)

    # A renewed certificate for the stored key may come alone.
    cli.ok("upstreams", "set", NAME, "--client-cert", str(cert))
    line = cli.fail("upstreams", "set", NAME, "--client-cert", str(upstream.ca_file))
    assert "client_key does not belong to client_cert" in line and line.endswith("(field: client_key)")

    assert cli.fields("upstreams", "set", NAME, "--no-client-cert")["client key"] == "-"
    refused = get(cli.proxy.host, manifest_path("2"))
    assert refused.status in (502, 503) and NAME in refused.error_message
    cli.assert_nothing_leaked(key_pem, key_pem.splitlines()[1], cli.token or "")


def test_set_refuses_what_it_cannot_send(self_signed: Upstream, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    cli = started(make_proxy, tmp_path)
    assert "nothing to change" in cli.fail("upstreams", "set", NAME, status=2)
    missing = tmp_path / "missing.crt"
    assert cli.fail("upstreams", "set", NAME, "--ca-cert", str(missing), status=2) == \
        f"registry-proxy: cannot read --ca-cert {missing}: No such file or directory (field: ca_cert)"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    assert cli.fail("upstreams", "set", NAME, "--client-cert", str(not_pem), status=2).endswith("(field: client_cert)")
    assert "no PEM private key" in cli.fail("upstreams", "set", NAME, "--client-key", str(not_pem), status=2)
    assert "cannot go with" in cli.fail("upstreams", "set", NAME, "--no-client-cert", "--client-key", str(not_pem),
                                        status=2)
    # The server's checks come back as one line naming the field.
    line = cli.fail("upstreams", "set", NAME, "--endpoint", "https://host/path")
    assert line.endswith("(field: endpoint)")
    assert cli.fail("upstreams", "show", "https://quay.io") == \
        "registry-proxy: drop the scheme: use `quay.io` instead of `https://quay.io` (field: address)"
    cli.ok("upstreams", "set", NAME, "--endpoint", f"http://{self_signed.host}")
    line = cli.fail("registries", "fetch-ca", NAME, "--yes", "--fingerprint", "ab" * 32)
    assert "not an https:// endpoint" in line and line.endswith("(field: address)")
    assert cli.table("upstreams", "list")[0]["ENDPOINT"] == f"http://{self_signed.host}"
    result = cli.run("registries", "fetch-ca", NAME, "--fingerprint", "ab:cd")
    assert result.returncode == 2 and "is not a SHA-256 fingerprint" in result.stderr


def test_fetch_ca_leaves_config_file_registries_alone(self_signed: Upstream, make_proxy: ProxyFactory,
                                                      tmp_path: Path) -> None:
    cli = started(make_proxy, tmp_path, {"registries": [{"address": NAME, "endpoint": self_signed.url}]})
    line = cli.fail("registries", "fetch-ca", NAME, "--yes", "--fingerprint", sha256_of(self_signed.ca_file))
    assert "set in the config file" in line and "nothing was stored" in line and line.endswith("(field: address)")
    assert cli.fields("upstreams", "show", NAME)["source"] == "config"
    assert "config file" in cli.fail("upstreams", "set", NAME, "--insecure")


def test_cli_talks_to_a_proxy_served_over_https(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    pair = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "proxy.crt", tmp_path / "proxy.key", tmp_path / "ca.crt"
    pair.cert_chain_pems[0].write_to_path(str(cert_file))
    pair.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    cli = started(make_proxy, tmp_path, {"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    assert cli.proxy.url.startswith("https://")

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in cli.env(cli.token).items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")} | env
        return subprocess.run([sys.executable, "-m", "proxy", "upstreams", "list"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60, cwd=tmp_path, env=env)

    untrusted = run({})
    assert untrusted.returncode == 1
    line = one_line(untrusted.stderr)
    assert "does not trust" in line and "SSL_CERT_FILE" in line, line
    trusted = run({"SSL_CERT_FILE": str(ca_file)})
    assert trusted.returncode == 0 and trusted.stdout.startswith("ADDRESS "), trusted.stderr


def test_fingerprint_spellings_and_expiry_marks() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    for spelling in (digest, digest.upper(), colons(digest), f"sha256:{digest}", f"SHA256:{colons(digest)}",
                     f"SHA256 Fingerprint={colons(digest)}", f" {colons(digest).lower()} "):
        assert fingerprint(spelling) == digest
    with pytest.raises(argparse.ArgumentTypeError, match="SHA-1"):
        fingerprint(hashlib.sha1(b"x").hexdigest())
    with pytest.raises(argparse.ArgumentTypeError):
        fingerprint(digest[:-1] + "g")
    now = datetime.now(UTC)
    assert expiry((now - timedelta(days=1)).isoformat()).endswith(" UTC EXPIRED")
    assert expiry((now + timedelta(days=1)).isoformat()).endswith(" UTC")
    assert "NOT YET VALID" in expiry((now + timedelta(days=9)).isoformat(), (now + timedelta(days=1)).isoformat())
