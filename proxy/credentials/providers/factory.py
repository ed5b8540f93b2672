"""Build the minter a stored credential calls for."""

from __future__ import annotations

from typing import Any

from proxy.credentials.providers import Minter
from proxy.credentials.providers.ecr import EcrMinter, parse_ecr_address
from proxy.credentials.providers.gcr import GcrMinter

__all__ = ["MINTED_KINDS", "build_minter"]

MINTED_KINDS = ("ecr", "gcr")


def build_minter(kind: str, address: str, secret: str | None, options: dict[str, Any]) -> Minter:
    if kind == "ecr":
        return EcrMinter(parse_ecr_address(address), access_key_id=options.get("access_key_id"),
                         secret_access_key=secret, role_arn=options.get("role_arn"),
                         endpoint_url=options.get("aws_endpoint_url"))
    if kind == "gcr":
        return GcrMinter(mode=options.get("mode", "access_token"), json_key=secret)
    raise ValueError(f"kind {kind!r} is not minted")
