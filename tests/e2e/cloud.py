"""Local stand-ins for the cloud APIs that mint registry passwords.

`FakeEcr` speaks ECR's GetAuthorizationToken JSON protocol, so boto3 runs
for real against it; `FakeGoogleTokenEndpoint` checks the JWT assertion that
google-auth signs with a service-account key before it hands out a token.
Both tell a `TokenServer` which password the registry accepts from now on.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .bgserver import BackgroundApp
from .tokenserver import TokenServer

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
GAR = "us-docker.pkg.dev"
# No stray AWS configuration or instance metadata on the test machine may leak in.
AWS_ISOLATION = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                 "AWS_EC2_METADATA_DISABLED": "true"}
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"


class FakeEcr:
    def __init__(self, on_mint: Callable[[str, float], None], *, lifetime: float = 12 * 3600,
                 access_key_id: str = "AKIAEXAMPLEPROXY0001") -> None:
        self.on_mint = on_mint
        self.lifetime = lifetime
        self.access_key_id = access_key_id
        self.fail = False
        self.expires_at: float | None = None  # None: send no expiresAt at all when `omit_expiry`
        self.omit_expiry = False
        self.mints = 0
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._server = BackgroundApp(app, name="e2e-fake-ecr")
        self.url = self._server.url

    def stop(self) -> None:
        self._server.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        auth = request.headers.get("Authorization", "")
        self.calls.append({"target": request.headers.get("X-Amz-Target"), "body": body,
                           "signed_by": auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else None})
        if request.headers.get("X-Amz-Target") != ECR_TARGET:
            return web.json_response({"__type": "UnknownOperationException"}, status=400)
        if self.fail:
            return web.json_response({"__type": "ServerException", "message": "minting is down"}, status=500,
                                     content_type="application/x-amz-json-1.1")
        with self._lock:
            self.mints += 1
            password = secrets.token_urlsafe(24)
            expires = time.time() + self.lifetime
            self.on_mint(password, expires)
        data: dict[str, Any] = {"authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
                                "proxyEndpoint": f"https://{body['registryIds'][0]}.dkr.ecr.example"}
        if not self.omit_expiry:
            data["expiresAt"] = expires
        return web.json_response({"authorizationData": [data]}, content_type="application/x-amz-json-1.1")


def service_account_key(token_uri: str) -> tuple[str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "e2e-project", "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": "puller@e2e-project.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": token_uri}
    return json.dumps(info), key


class FakeGoogleTokenEndpoint:
    """OAuth2 JWT-bearer grant: verifies the RS256 assertion with the key's public half."""

    def __init__(self, on_mint: Callable[[str], None], *, lifetime: int = 3600) -> None:
        self.on_mint = on_mint
        self.lifetime = lifetime
        self.public_key: rsa.RSAPublicKey | None = None
        self.grants: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_post("/token", self._handle)
        self._server = BackgroundApp(app, name="e2e-fake-google-token")
        self.token_uri = f"{self._server.url}/token"

    def stop(self) -> None:
        self._server.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        assert self.public_key is not None
        try:
            self.public_key.verify(_unb64(signature_b64), f"{header_b64}.{claims_b64}".encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001 - any verification failure is a refusal
            return web.json_response({"error": "invalid_grant", "error_description": "bad signature"}, status=400)
        claims = json.loads(_unb64(claims_b64))
        self.grants.append({"grant_type": form.get("grant_type"), "claims": claims})
        # google-auth always names Google's endpoint as the audience, whatever token_uri says.
        if claims.get("aud") != GOOGLE_AUDIENCE or "cloud-platform.read-only" not in claims.get("scope", ""):
            return web.json_response({"error": "invalid_grant", "error_description": "wrong aud/scope"}, status=400)
        token = "ya29." + secrets.token_urlsafe(32)
        self.on_mint(token)
        return web.json_response({"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"})


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@contextmanager
def google_account(tokens: TokenServer, mode: str) -> Iterator[tuple[FakeGoogleTokenEndpoint, str]]:
    """A service-account key whose tokens `tokens` accepts (for mode json_key, the key itself)."""
    endpoint = FakeGoogleTokenEndpoint(lambda token: tokens.set_login("oauth2accesstoken", token))
    try:
        key_json, private_key = service_account_key(endpoint.token_uri)
        endpoint.public_key = private_key.public_key()
        if mode == "json_key":
            tokens.set_login("_json_key", key_json)
        yield endpoint, key_json
    finally:
        endpoint.stop()
