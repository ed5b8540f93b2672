"""A small Docker token server (the "token" auth of the distribution spec).

It signs its own JWTs (ES256 via `cryptography`) with a leaf certificate
issued by a throw-away root CA; the registry is configured with that root as
`rootcertbundle` and checks the `x5c` chain in each token's header. Every
request is recorded so tests can check what the proxy sent to the realm.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .bgserver import BackgroundApp


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a Basic Authorization header, None if not Basic/invalid."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class TokenServer:
    """Docker token server on 127.0.0.1 with a fixed access policy.

    Policy: anonymous callers may pull any repository not under one of
    `private_prefixes`; valid users may pull everything; users in `pushers`
    may also push/delete. A wrong password (or unknown user) is a 401 from the
    token server itself, as on Docker Hub. `seed_user` is always a pusher and
    exists so fixtures can seed images without making test users pushers.
    """

    def __init__(
        self,
        base: Path,
        users: dict[str, str] | None = None,
        *,
        private_prefixes: tuple[str, ...] = ("private/",),
        pushers: set[str] | None = None,
        service: str = "registry.e2e.test",
        issuer: str = "e2e-token-issuer",
        expires_in: int = 300,
        seed_user: str = "seeder",
    ) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.seed_user = seed_user
        self.seed_password = secrets.token_hex(8)
        self._logins = {**self.users, seed_user: self.seed_password}
        self.private_prefixes = private_prefixes
        self.pushers = set(pushers or ()) | {seed_user}
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[dict[str, Any]] = []

        ca = trustme.CA()
        leaf = ca.issue_cert("token-signer.e2e.test")
        self.root_bundle = base / "token-root.pem"
        ca.cert_pem.write_to_path(str(self.root_bundle))
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        self._key = key
        leaf_cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        self._x5c = [base64.b64encode(leaf_cert.public_bytes(serialization.Encoding.DER)).decode()]

        app = web.Application()
        app.router.add_route("GET", "/token", self._handle)
        app.router.add_route("POST", "/token", self._handle)
        self._server = BackgroundApp(app, name="e2e-token-server")
        self.realm = f"{self._server.url}/token"
        self.host = self._server.host
        self.url = self._server.url

    def set_login(self, user: str, password: str | None) -> None:
        """Accept only this password for `user` from now on (None: reject the user).

        Stands in for a cloud registry rotating its short-lived passwords.
        """
        if password is None:
            self._logins.pop(user, None)
            self.users.pop(user, None)
        else:
            self._logins[user] = password
            self.users[user] = password

    @property
    def seed_creds(self) -> str:
        return f"{self.seed_user}:{self.seed_password}"

    def stop(self) -> None:
        self._server.stop()

    # -- token issuing -------------------------------------------------------

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (ES256) with the signing cert chain in `x5c`."""
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        # JWS wants the raw 64-byte r||s form, not the DER that cryptography returns.
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def grant(self, user: str | None, scope: str) -> dict[str, Any] | None:
        """The access entry for one requested scope, None when nothing is granted."""
        kind, _, rest = scope.partition(":")
        name, _, actions_text = rest.rpartition(":")
        if not name:
            return None
        allowed: set[str] = set()
        if kind == "repository":
            if user is not None or not name.startswith(self.private_prefixes):
                allowed.add("pull")
            if user in self.pushers:
                allowed |= {"push", "delete", "*"}
        elif user in self.pushers:  # e.g. registry:catalog:*
            allowed.add("*")
        actions = [a for a in actions_text.split(",") if a in allowed]
        return {"type": kind, "name": name, "actions": actions} if actions else None

    def issue(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
        now = int(time.time())
        access = [entry for scope in scopes if (entry := self.grant(user, scope)) is not None]
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            # Backdated so a registry clock a moment behind still accepts it.
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self.sign(claims)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }

    # -- HTTP ----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        creds = parse_basic(header)
        scopes = request.query.getall("scope", [])
        if request.method == "POST":
            # OAuth2 password grant (containerd tries it before GET).
            form = await request.post()
            if form.get("grant_type") != "password":
                unsupported = web.json_response({"error": "unsupported_grant_type"}, status=400)
                return self._record(request, header, None, scopes, unsupported)
            creds = (str(form.get("username", "")), str(form.get("password", "")))
            scopes = [s for value in form.getall("scope", []) for s in str(value).split(" ") if s]
        user: str | None = None
        if header is not None or creds is not None:
            if creds is None or self._logins.get(creds[0]) != creds[1]:
                response = web.json_response(
                    {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}, status=401
                )
                return self._record(request, header, creds, scopes, response)
            user = creds[0]
        return self._record(request, header, creds, scopes, web.json_response(self.issue(user, scopes)))

    def _record(
        self,
        request: web.Request,
        header: str | None,
        creds: tuple[str, str] | None,
        scopes: list[str],
        response: web.Response,
    ) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": {key: request.query[key] for key in request.query},
                "query_string": request.query_string,
                "service": request.query.get("service"),
                "scopes": scopes,
                "authorization": header is not None,
                "username": creds[0] if creds else None,
                "remote": request.remote,
                "status": response.status,
            }
        )
        return response
