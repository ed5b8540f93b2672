"""Start a real CNCF distribution registry (Debian's `docker-registry` 2.8).

Facts about distribution 2.8.2 this module relies on (checked by running it):

* With `log.formatter: json` the app logs one JSON object per line; completed
  requests have `msg` "response completed" (or "... with error") and fields
  `http.request.method`, `http.request.uri`, `http.response.status`. Requests
  rejected by auth (401) get NO such line, only a warning "error authorizing
  context ...". The access log (`log.accesslog.disabled: false`) however
  writes an Apache combined-format line for every request, 401s included, so
  `log_requests()` parses those.
* htpasswd auth works over plain HTTP (no TLS requirement in 2.8) and accepts
  bcrypt hashes of any cost; cost 4 is used because at the default cost 12
  every authenticated request spends ~250 ms in bcrypt.
* skopeo's cert dir convention: a directory whose `*.crt` files are CAs.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bcrypt
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .tools import free_port, reap, require_binary, skopeo_ok, spawn, wait_http

if TYPE_CHECKING:
    import subprocess

    from .tokenserver import TokenServer

# 127.0.0.1 - - [27/Nov/2026:20:28:14 +0000] "HEAD /v2/x/manifests/latest HTTP/1.1" 404 96 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<user_agent>[^"]*)"'
)

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@dataclass
class Upstream:
    host: str  # "127.0.0.1:PORT"
    url: str  # "http://127.0.0.1:PORT" or "https://..."
    auth: str  # "none" | "htpasswd" | "token"
    tls: bool
    ca_file: Path | None  # CA PEM a client must trust when tls
    storage: Path
    log_path: Path
    users: dict[str, str]  # logins meant for tests (pull; push too on htpasswd)
    config_path: Path = field(default=Path())
    cert_dir: Path | None = None  # skopeo --*-cert-dir (holds ca.crt) when tls
    push_creds: str | None = None  # "user:password" allowed to push (seeding)
    token_server: TokenServer | None = None
    client_files: tuple[Path, Path] | None = None  # (cert, key) the registry accepts, with client_ca
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def token_realms(self) -> list[str]:
        """For a registries entry: the token server listens on another port, so its realm must be named."""
        return [self.token_server.realm] if self.token_server else []

    # -- process control -----------------------------------------------------

    def start(self) -> None:
        """(Re)start on the same port and storage and wait until /v2/ answers."""
        if self.running:
            return
        if self._proc is not None:
            reap(self._proc)  # it died on its own; forget it before respawning
        binary = require_binary("docker-registry")
        self._proc = spawn([binary, "serve", str(self.config_path)], self.log_path)
        try:
            wait_http(f"{self.url}/v2/", ok=(200, 401), ssl_ctx=self.ssl_context(), proc=self._proc)
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM and wait (the registry exits at once: no drain timeout)."""
        if self._proc is not None:
            reap(self._proc)
            self._proc = None

    def kill(self) -> None:
        if self._proc is not None:
            reap(self._proc, kill=True)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- logs ----------------------------------------------------------------

    def log_entries(self) -> list[dict[str, Any]]:
        """All JSON log objects (app log), across restarts."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
        return entries

    def log_requests(self) -> list[dict[str, Any]]:
        """One dict per completed HTTP request, in completion order.

        Keys: method, uri, path, query, status, size, user_agent, remote.
        """
        requests = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _ACCESS_LINE.match(line)
            if match is None:
                continue
            entry: dict[str, Any] = match.groupdict()
            path, _, query = entry["uri"].partition("?")
            entry.update(
                path=path,
                query=query,
                status=int(entry["status"]),
                size=0 if entry["size"] == "-" else int(entry["size"]),
            )
            requests.append(entry)
        return requests

    def count_requests(self, method: str, path_suffix: str, *, status: int | None = None) -> int:
        """How many `method` requests had a path ending in `path_suffix`."""
        return sum(
            1
            for r in self.log_requests()
            if r["method"] == method.upper() and r["path"].endswith(path_suffix) and status in (None, r["status"])
        )

    def wait_requests(self, method: str, path_suffix: str, at_least: int = 1, timeout: float = 5) -> int:
        """count_requests, waiting for the count to reach `at_least`.

        The access log line is written after the response body, so a client
        can finish a moment before its request shows up in the log.
        """
        deadline = time.monotonic() + timeout
        while (count := self.count_requests(method, path_suffix)) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        return count

    # -- clients -------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """Client context trusting this registry's CA (None for plain HTTP)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_files is not None:
            ctx.load_cert_chain(*map(str, self.client_files))
        return ctx

    def skopeo_flags(self, direction: str, creds: str | None = None) -> list[str]:
        """TLS and credential flags for skopeo; direction "src", "dest" or "" (inspect)."""
        prefix = f"--{direction}-" if direction else "--"
        if self.tls:
            # Verify for real: the point of the TLS upstream is the CA handling.
            flags = [f"{prefix}tls-verify=true", f"{prefix}cert-dir={self.cert_dir}"]
        else:
            flags = [f"{prefix}tls-verify=false"]
        # --*-no-creds keeps skopeo from picking up a stray auth.json.
        flags.append(f"{prefix}creds={creds}" if creds else f"{prefix}no-creds")
        return flags

    def inspect_raw(self, repo: str, ref: str, *, creds: str | None = None) -> bytes:
        """Exact manifest bytes as served, via `skopeo inspect --raw`."""
        sep = "@" if ref.startswith("sha256:") else ":"
        ref_arg = f"docker://{self.host}/{repo}{sep}{ref}"
        result = skopeo_ok("inspect", "--raw", *self.skopeo_flags("", creds), ref_arg, text=False)
        return bytes(result.stdout)

    def request(
        self,
        method: str,
        path: str,
        *,
        creds: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """A direct HTTP call to the registry, doing Basic or Bearer auth as challenged."""
        headers = dict(headers or {})
        status, resp_headers, body = self._raw(method, path, headers, data)
        challenge = resp_headers.get("www-authenticate", "")
        if status != 401 or not challenge:
            return status, resp_headers, body
        if challenge.lower().startswith("basic") and creds:
            headers["Authorization"] = "Basic " + b64encode(creds.encode()).decode()
        elif challenge.lower().startswith("bearer"):
            headers["Authorization"] = "Bearer " + self._token(challenge, creds)
        else:
            return status, resp_headers, body
        return self._raw(method, path, headers, data)

    def get_manifest(self, repo: str, ref: str, *, creds: str | None = None) -> bytes:
        status, _, body = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", creds=creds, headers={"Accept": MANIFEST_ACCEPT}
        )
        assert status == 200, f"GET manifest {repo}:{ref} -> {status}: {body[:300]!r}"
        return body

    def _raw(
        self, method: str, path: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_context()) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def _token(self, challenge: str, creds: str | None) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm")
        assert realm.startswith("http://127.0.0.1:"), realm
        req = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(params)}")
        if creds:
            req.add_header("Authorization", "Basic " + b64encode(creds.encode()).decode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.load(resp)["token"])


def self_signed_pair(ip: str, *, days: int = 30) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"self-signed {ip}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    # Cost 4: bcrypt is the only scheme distribution accepts, and the cost is
    # paid by the registry on every request.
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}" for user, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")


def start_registry(
    base: Path,
    *,
    auth: str = "none",
    tls: bool = False,
    users: dict[str, str] | None = None,
    token_server: TokenServer | None = None,
    self_signed: bool = False,
    client_ca: bool = False,
) -> Upstream:
    """Configure and start a registry under `base`; the caller must stop() it."""
    require_binary("docker-registry")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(base / "storage")},
            "delete": {"enabled": True},
            # No "cache" key: distribution then runs without its in-memory blob
            # descriptor cache, which would hide blobs tests delete on disk.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "health": {"storagedriver": {"enabled": False}},
    }
    push_creds: str | None = None
    if auth == "htpasswd":
        users = dict(users) if users else {"alice": secrets.token_hex(8)}
        write_htpasswd(base / "htpasswd", users)
        config["auth"] = {"htpasswd": {"realm": "e2e-registry", "path": str(base / "htpasswd")}}
        push_creds = "{}:{}".format(*next(iter(users.items())))
    elif auth == "token":
        assert token_server is not None, "auth='token' needs a TokenServer"
        users = dict(token_server.users)
        push_creds = token_server.seed_creds
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(token_server.root_bundle),
            }
        }
    elif auth == "none":
        users = {}
    else:
        raise ValueError(f"unknown auth {auth!r}")

    ca_file: Path | None = None
    cert_dir: Path | None = None
    client_files: tuple[Path, Path] | None = None
    if tls:
        cert_dir = base / "certs"
        cert_dir.mkdir(exist_ok=True)
        ca_file = cert_dir / "ca.crt"
        if self_signed:
            # One certificate that is its own issuer: what `openssl req -x509` makes.
            cert_pem, key_pem = self_signed_pair("127.0.0.1")
            ca_file.write_bytes(cert_pem)
            (base / "server.crt").write_bytes(cert_pem)
            (base / "server.key").write_bytes(key_pem)
        else:
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            ca.cert_pem.write_to_path(str(ca_file))
            cert.private_key_pem.write_to_path(str(base / "server.key"))
            cert.cert_chain_pems[0].write_to_path(str(base / "server.crt"))
            for extra in cert.cert_chain_pems[1:]:
                extra.write_to_path(str(base / "server.crt"), append=True)
        config["http"]["tls"] = {"certificate": str(base / "server.crt"), "key": str(base / "server.key")}
        if client_ca:
            clients = trustme.CA()
            clients.cert_pem.write_to_path(str(base / "client-ca.crt"))
            client = clients.issue_cert("proxy.e2e.test")
            client.cert_chain_pems[0].write_to_path(str(base / "client.crt"))
            client.private_key_pem.write_to_path(str(base / "client.key"))
            client_files = (base / "client.crt", base / "client.key")
            # skopeo's cert dir convention: *.cert with a matching *.key.
            (cert_dir / "client.cert").write_bytes(client_files[0].read_bytes())
            (cert_dir / "client.key").write_bytes(client_files[1].read_bytes())
            config["http"]["tls"]["clientcas"] = [str(base / "client-ca.crt")]

    config_path = base / "config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    scheme = "https" if tls else "http"
    upstream = Upstream(
        host=f"127.0.0.1:{port}",
        url=f"{scheme}://127.0.0.1:{port}",
        auth=auth,
        tls=tls,
        ca_file=ca_file,
        storage=base / "storage",
        log_path=base / "registry.log",
        users=users,
        config_path=config_path,
        cert_dir=cert_dir,
        push_creds=push_creds,
        token_server=token_server,
        client_files=client_files,
    )
    upstream.start()
    return upstream
