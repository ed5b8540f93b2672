"""What a credential of each kind takes: basic (username and password), ecr, gcr.

ECR and GCR credentials hold what the proxy needs to mint registry
passwords itself; their secrets are write-only like any password. The admin
API and the config file both check credentials here, so they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from proxy.credentials.fields import COMMON_FIELDS, KIND_FIELDS, KINDS, OPTION_FIELDS, secret_of
from proxy.credentials.providers.ecr import parse_ecr_address
from proxy.credentials.providers.gcr import GCR_MODES, check_gcr_address, parse_service_account_key
from proxy.credentials.schema import FieldError
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT

# KINDS stays importable here for the command line's --kind choices.
__all__ = ["KINDS", "CredentialInput", "parse_credential", "parse_edit"]

_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_URL = re.compile(r"https?://[^\s/?#]+(?:/[^\s?#]*)?")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CredentialInput:
    kind: str
    email: str
    username: str
    secret: str | None = field(repr=False)
    options: dict[str, Any]
    environment: str = DEFAULT_ENVIRONMENT


def parse_credential(body: dict[str, Any], *, address: str) -> CredentialInput:
    given = _parse_kind(body, address)
    return replace(given, environment=body.get("environment", DEFAULT_ENVIRONMENT))


def _parse_kind(body: dict[str, Any], address: str) -> CredentialInput:
    kind = body.get("kind", "basic")
    if kind not in KINDS:
        raise _invalid("kind", f"kind must be one of {', '.join(KINDS)}")
    takes = {f.name for f in COMMON_FIELDS + KIND_FIELDS[kind]}
    for key in body:
        if key not in takes:
            raise _invalid(key, f"{key} does not apply to kind {kind}")
    email = check_email(body.get("email", ""))
    if kind == "basic":
        for key in (f.name for f in KIND_FIELDS["basic"]):
            if key not in body:
                raise _invalid(key, f"{key} is required")
        return CredentialInput("basic", email, check_username(body["username"]), check_password(body["password"]), {})
    margin = body.get("renew_margin")
    if margin is not None and not 0 < margin < 12 * 3600:
        raise _invalid("renew_margin", "renew_margin must be seconds between 0 and 43200 (12 hours)")
    if kind == "ecr":
        return _ecr(body, address, email, margin)
    return _gcr(body, address, email, margin)


class StoredCredential(Protocol):
    """What an edit needs of the credential it changes."""

    @property
    def address(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str | None: ...
    @property
    def options(self) -> dict[str, Any]: ...


def parse_edit(record: StoredCredential, body: dict[str, Any]) -> CredentialInput:
    """An edit restates the credential; only the address and kind stay as they were."""
    if body.get("kind", record.kind) != record.kind:
        raise _invalid("kind", "the kind of a credential cannot change: delete it and add a new one")
    secret_field = secret_of(record.kind)
    if record.password is not None and secret_field not in body:
        # It is never shown, so an edit cannot keep it unseen.
        raise _invalid(secret_field, f"{secret_field} is required with every edit")
    kept: dict[str, Any] = {k: v for k, v in record.options.items() if k in OPTION_FIELDS}
    if record.kind == "basic":
        kept["username"] = record.username
    merged = {"kind": record.kind, "email": record.email, **kept, **body, "environment": record.environment}
    merged.pop("address", None)
    return parse_credential(merged, address=record.address)


def _ecr(body: dict[str, Any], address: str, email: str, margin: float | None) -> CredentialInput:
    try:
        parse_ecr_address(address)
    except ValueError as exc:
        raise _invalid("address", str(exc)) from None
    key_id, secret = body.get("access_key_id"), body.get("secret_access_key")
    if (key_id is None) != (secret is None):
        missing = "secret_access_key" if secret is None else "access_key_id"
        raise _invalid(missing, "access_key_id and secret_access_key go together; leave both out to use the "
                                "default AWS credential chain (environment, instance role, web identity)")
    if key_id is not None and not _ACCESS_KEY_ID.fullmatch(key_id):
        raise _invalid("access_key_id", "access_key_id must be 16 to 128 uppercase letters and digits")
    if secret is not None and not secret.strip():
        raise _invalid("secret_access_key", "secret_access_key must not be empty")
    role = body.get("role_arn")
    if role is not None and not _ROLE_ARN.fullmatch(role):
        raise _invalid("role_arn", "role_arn must look like arn:aws:iam::123456789012:role/name")
    url = body.get("aws_endpoint_url")
    if url is not None and not _URL.fullmatch(url):
        raise _invalid("aws_endpoint_url", "aws_endpoint_url must be an http(s) URL")
    options = {k: v for k, v in (("access_key_id", key_id), ("role_arn", role), ("aws_endpoint_url", url),
                                 ("renew_margin", margin)) if v is not None}
    return CredentialInput("ecr", email, "AWS", secret, options)


def _gcr(body: dict[str, Any], address: str, email: str, margin: float | None) -> CredentialInput:
    try:
        check_gcr_address(address)
    except ValueError as exc:
        raise _invalid("address", str(exc)) from None
    mode = body.get("mode", "access_token")
    if mode not in GCR_MODES:
        raise _invalid("mode", f"mode must be one of {', '.join(GCR_MODES)}")
    key_text = body.get("json_key")
    options: dict[str, Any] = {"mode": mode}
    if key_text is None:
        if mode == "json_key":
            raise _invalid("json_key", "mode json_key needs the service-account key in json_key")
    else:
        try:
            options["client_email"] = parse_service_account_key(key_text)["client_email"]
        except ValueError as exc:
            raise _invalid("json_key", str(exc)) from None
    if margin is not None:
        options["renew_margin"] = margin
    username = "_json_key" if mode == "json_key" else "oauth2accesstoken"
    return CredentialInput("gcr", email, username, key_text, options)


def check_email(value: str) -> str:
    if value and not _EMAIL.fullmatch(value) or len(value) > 254 or _CONTROL.search(value):
        raise FieldError("email must look like name@example.com, or be empty", "email")
    return value


def check_username(value: str) -> str:
    if not value:
        raise FieldError("username must not be empty", "username")
    if len(value) > 255 or ":" in value or _CONTROL.search(value):
        # A colon would split differently in HTTP Basic credentials.
        raise FieldError("username must be at most 255 characters, without ':' or control "
                       "characters", "username")
    return value


def check_password(value: str) -> str:
    if not value:
        raise FieldError("password must not be empty", "password")
    if len(value) > 16384 or "\x00" in value:
        raise FieldError("password must be at most 16384 characters, without NUL",
                    "password")
    return value


def _invalid(name: str, message: str) -> FieldError:
    return FieldError(message, name)
