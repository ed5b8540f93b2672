"""Google Container Registry and Artifact Registry: service-account keys.

Two modes, as Google documents them: ``json_key`` sends the whole key as the
password of user ``_json_key``; ``access_token`` (the default) mints
short-lived OAuth tokens from the key and sends them as ``oauth2accesstoken``.
Without a key, Application Default Credentials apply (workload identity).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from proxy.credentials.providers import Minted, MintError

__all__ = ["GCR_MODES", "GcrMinter", "check_gcr_address", "parse_service_account_key"]

GCR_MODES = ("access_token", "json_key")
SCOPE = "https://www.googleapis.com/auth/cloud-platform.read-only"
_ADDRESS = re.compile(r"(?:[a-z0-9-]+\.)?gcr\.io|[a-z0-9-]+-docker\.pkg\.dev")
_KEY_FIELDS = ("type", "client_email", "private_key", "token_uri")


def check_gcr_address(address: str) -> None:
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"{address!r} is not a Google registry address; expected gcr.io, <region>.gcr.io "
                         "or <location>-docker.pkg.dev")


def parse_service_account_key(text: str) -> dict[str, Any]:
    """The key as a dict; ValueError naming the first missing or wrong field."""
    try:
        key = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("json_key is not valid JSON") from None
    if not isinstance(key, dict):
        raise ValueError("json_key must be a JSON object")
    for name in _KEY_FIELDS:
        if not isinstance(key.get(name), str) or not key[name]:
            raise ValueError(f"json_key has no {name}")
    if key["type"] != "service_account":
        raise ValueError(f"json_key has type {key['type']!r}, not 'service_account'")
    return key


@dataclass(frozen=True)
class GcrMinter:
    mode: str = "access_token"
    json_key: str | None = field(default=None, repr=False)

    def mint(self) -> Minted:
        # Imported here: config parsing and the CLI need only the rules above.
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.urllib3
        import urllib3
        from google.oauth2 import service_account

        if self.mode == "json_key":
            if self.json_key is None:
                raise MintError("mode json_key needs a json_key")
            return Minted("_json_key", self.json_key, None)
        try:
            if self.json_key is not None:
                info = parse_service_account_key(self.json_key)
                creds: Any = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            else:
                creds, _ = google.auth.default(scopes=[SCOPE])
            creds.refresh(google.auth.transport.urllib3.Request(urllib3.PoolManager(timeout=20.0, retries=1)))
        except (google.auth.exceptions.GoogleAuthError, ValueError, urllib3.exceptions.HTTPError) as exc:
            raise MintError(f"Google token request failed: {_safe(exc)}") from None
        expiry = creds.expiry.replace(tzinfo=UTC).timestamp() if creds.expiry else None
        return Minted("oauth2accesstoken", creds.token, expiry)


def _safe(exc: Exception) -> str:
    # google-auth puts the token endpoint's answer in its errors, never the key.
    return str(exc).split("\n")[0][:300]
