"""The SSRF guard: registries named only in a request path may reach public addresses only.

An operator who configures a registry vouches for it, so configured registries
(and the token realms and redirects they send us to) may reach private
addresses; link-local ones (cloud metadata services) stay refused for all.
Everything else goes through ``PublicOnlyResolver``, which checks the
addresses a name resolves to at connection time, so a name cannot pass a
check and then rebind to a private address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["BlockedAddress", "PublicOnlyResolver", "allowed", "check_literal", "is_private_host", "is_public"]



class BlockedAddress(OSError):
    """Raised inside the connector so aiohttp wraps it in its connection error."""

    def __init__(self, host: str, address: str) -> None:
        self.host = host
        self.address = address
        super().__init__(f"{host} resolves to non-public address {address}")


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_link_local(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local


def allowed(address: str, *, private_ok: bool) -> bool:
    """Link-local (cloud metadata at 169.254.169.254) is never a registry."""
    if is_link_local(address):
        return False
    return private_ok or is_public(address)


def check_literal(host: str, *, private_ok: bool = False) -> None:
    """Refuse an IP literal the guard would refuse (aiohttp skips the resolver for those)."""
    bare = host.strip("[]")
    if _is_ip(bare) and not allowed(bare, private_ok=private_ok):
        raise BlockedAddress(host, bare)


def is_private_host(host: str) -> bool:
    """A host written as a non-public IP address, or a name that is loopback by definition (localhost)."""
    bare = host.lower().strip("[]").rstrip(".")
    if bare == "localhost" or bare.endswith(".localhost"):
        return True
    return _is_ip(bare) and not is_public(bare)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class PublicOnlyResolver(AbstractResolver):
    """With ``private_ok`` (configured registries) only link-local is refused."""

    def __init__(self, inner: AbstractResolver | None = None, *, private_ok: bool = False) -> None:
        self._inner = inner or DefaultResolver()
        self._private_ok = private_ok

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not allowed(result["host"], private_ok=self._private_ok):
                raise BlockedAddress(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
