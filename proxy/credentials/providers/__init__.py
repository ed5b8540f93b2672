"""Credential providers that mint short-lived registry passwords (ECR, GCR).

The only modules that import boto3 or google-auth. Their ``mint`` calls
block, and callers run them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MintError", "Minted", "Minter"]


@dataclass(frozen=True)
class Minted:
    username: str
    password: str = field(repr=False)
    expires_at: float | None  # epoch seconds; None when the provider does not say


class MintError(Exception):
    """Minting failed; the message is safe to show (it carries no secret)."""


class Minter(Protocol):
    def mint(self) -> Minted: ...
