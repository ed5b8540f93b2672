"""Where the admin API's bearer token comes from.

In order: ``REGISTRY_PROXY_ADMIN_TOKEN``, the file named by ``admin.token_file``,
or a random token generated on first start into ``<data_dir>/admin-token``
(mode 0600), whose path is logged, never its content. Replicas that share
their state (``state.url``) must share the token too: for them it is never
generated, and one of the first two is required.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ADMIN_TOKEN_ENV", "AdminToken", "AdminTokenError", "resolve_admin_token"]

ADMIN_TOKEN_ENV = "REGISTRY_PROXY_ADMIN_TOKEN"
MIN_LENGTH = 16


class AdminTokenError(Exception):
    """The configured token cannot be used; worded for a one-line start-up failure."""


@dataclass(frozen=True)
class AdminToken:
    value: str = field(repr=False)
    origin: str  # for the start-up log: where to find it
    generated: bool = False


def resolve_admin_token(token_file: Path | None, data_dir: Path, environ: Mapping[str, str], *,
                        generate: bool = True) -> AdminToken:
    if environ.get(ADMIN_TOKEN_ENV):
        return AdminToken(_checked(environ[ADMIN_TOKEN_ENV].strip(), ADMIN_TOKEN_ENV), f"${ADMIN_TOKEN_ENV}")
    if token_file is not None:
        try:
            text = token_file.read_text().strip()
        except OSError as exc:
            raise AdminTokenError(f"Config 'admin.token_file' has value '{token_file}'. "
                                f"Cannot read it: {exc.strerror}.") from None
        return AdminToken(_checked(text, "admin.token_file"), str(token_file))
    if not generate:
        raise AdminTokenError(f"state.url is set, so every replica must use one admin token: set ${ADMIN_TOKEN_ENV} "
                              "or admin.token_file (from the same Secret on each); none is generated.")
    path = data_dir / "admin-token"
    if path.exists():
        return AdminToken(_checked(path.read_text().strip(), str(path)), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return AdminToken(token, str(path), generated=True)


def _checked(token: str, where: str) -> str:
    if len(token) < MIN_LENGTH:
        raise AdminTokenError(f"Admin token from {where} is shorter than {MIN_LENGTH} characters.")
    return token
