"""Names, tags, digests and registry addresses: pure parsing, no I/O.

Everything a client sends in a path is checked here against the distribution
spec's grammars before it can reach the disk or the network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ALIAS_PATTERN",
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "Digest",
    "InvalidReference",
    "MAX_ALIAS_LENGTH",
    "RESERVED_ALIASES",
    "Target",
    "canonical_address",
    "parse_address",
    "parse_alias",
    "parse_digest",
    "parse_tag",
    "resolve_name",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

MAX_NAME_LENGTH = 255
MAX_ALIAS_LENGTH = 63
# `library` is where Docker Hub's one-part names live (dockerd's mirror requests
# say /v2/library/ubuntu); `localhost` already names a registry by Docker's rule.
RESERVED_ALIASES = frozenset({"library", "localhost"})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
# A path component without dots: a first component with a dot or a colon is read as an address.
ALIAS_PATTERN = r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*"
_ALIAS = re.compile(ALIAS_PATTERN)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
# The grammar's IPv6 host: hex and colons, so no zone ("%eth0"), no dotted tail, one spelling per case.
_IPV6 = re.compile(r"[0-9a-f:]+")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}


class InvalidReference(ValueError):
    """A name, tag, digest or address that does not match its grammar.

    ``kind`` is one of "name", "tag", "digest", "address" or "alias", so callers can
    map it to the right error code without parsing the message.
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex


@dataclass(frozen=True)
class Target:
    """A repository on a resolved registry, the unit of caching and auth."""

    registry: str
    repository: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def parse_digest(value: str) -> Digest:
    algorithm, sep, encoded = value.partition(":")
    if not sep:
        raise InvalidReference("digest", f"digest {value[:80]!r} has no algorithm")
    length = _DIGEST_HEX.get(algorithm)
    if length is None:
        raise InvalidReference("digest", f"unsupported digest algorithm {algorithm[:20]!r}")
    if len(encoded) != length or not all(c in "0123456789abcdef" for c in encoded):
        raise InvalidReference(
            "digest", f"{algorithm} digest must be {length} lowercase hex characters"
        )
    return Digest(algorithm, encoded)


def parse_tag(value: str) -> str:
    if not _TAG.fullmatch(value):
        raise InvalidReference("tag", f"tag {value[:140]!r} does not match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")
    return value


def parse_address(value: str) -> str:
    """Validate a registry address (host or IP, optional port) and canonicalize it.

    The messages say what to write instead, because this is what operators
    type into config files and the admin API.
    """
    raw = value
    if "://" in value:
        rest = value.split("://", 1)[1].split("/", 1)[0]
        raise InvalidReference("address", f"drop the scheme: use `{rest}` instead of `{raw}`")
    if value != value.strip() or any(c.isspace() for c in value):
        raise InvalidReference("address", f"address `{raw}` contains spaces")
    if "/" in value:
        host = value.split("/", 1)[0]
        raise InvalidReference("address", f"drop the path: use `{host}` instead of `{raw}`")
    if value != value.lower():
        raise InvalidReference("address", f"use lowercase: `{value.lower()}` instead of `{raw}`")
    if not _is_address(value):
        raise InvalidReference("address", f"`{raw}` is not a hostname or IP with an optional port")
    return canonical_address(value)


def parse_alias(value: str) -> str:
    """Validate a registry alias: a name clients can put first in a path instead of ``host:port``.

    Any path component without a dot, so that no client reads it as a
    registry address; not ``library`` nor ``localhost`` (RESERVED_ALIASES).
    """
    shown = repr(value[:80])
    if "." in value or ":" in value:
        raise InvalidReference("alias", f"alias {shown} has a dot or a colon, so it would be read as a registry "
                               "address; use lowercase letters and digits separated by '_', '__' or '-'")
    if value != value.lower():
        raise InvalidReference("alias", f"use lowercase: {value.lower()[:80]!r} instead of {shown}")
    if not _ALIAS.fullmatch(value) or len(value) > MAX_ALIAS_LENGTH:
        raise InvalidReference("alias", f"alias {shown} must be 1 to {MAX_ALIAS_LENGTH} lowercase letters and "
                               "digits, separated by '_', '__' or '-'")
    if value in RESERVED_ALIASES:
        why = ("Docker Hub's namespace of one-part names (`ubuntu` is `library/ubuntu`)" if value == "library"
               else "a registry address by Docker's rule")
        raise InvalidReference("alias", f"{shown} cannot be an alias: it is {why}")
    return value


def canonical_address(address: str) -> str:
    return DOCKER_HUB if address in DOCKER_HUB_ALIASES else address


def resolve_name(name: str, *, ns: str | None, default: str,
                 aliases: Mapping[str, str] | None = None) -> tuple[Target, bool]:
    """Split a client's repository name into registry and repository.

    Returns the target and whether the registry came from the default (no
    prefix, no ``ns``), which the whitelist check reports differently.
    Docker's rule: the first component is a registry when it contains a dot
    or a colon or is ``localhost``. A prefix in the path beats ``?ns=`` since
    containerd's ``override_path`` mirrors can send both.

    ``aliases`` maps a registry's alias to its address: a first component
    that is an alias, followed by more, stands for that address. With
    ``?ns=`` an alias counts only when it stands for the ns registry, since
    without ``override_path`` containerd sends the registry's own repository
    name, whose first component may happen to equal an alias.
    """
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference("name", f"repository name is longer than {MAX_NAME_LENGTH} characters")
    first, sep, rest = name.partition("/")
    aliased = (aliases or {}).get(first) if sep else None
    from_default = False
    if sep and _looks_like_registry(first):
        if not _is_address(first):
            raise InvalidReference("name", f"registry {first[:100]!r} in the name is not a valid address")
        registry, repository = canonical_address(first), rest
    elif aliased is not None and (ns is None or parse_address(ns) == aliased):
        registry, repository = aliased, rest
    elif ns is not None:
        registry, repository = parse_address(ns), name
    else:
        registry, repository, from_default = default, name, True
    _check_repository(repository)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
        if len(repository) > MAX_NAME_LENGTH:
            raise InvalidReference("name", f"repository name library/{name[:40]}... is longer than {MAX_NAME_LENGTH} characters")
    return Target(registry, repository), from_default


def _looks_like_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_repository(repository: str) -> None:
    for component in repository.split("/"):
        if not _COMPONENT.fullmatch(component):
            shown = component[:100]
            raise InvalidReference(
                "name",
                f"repository name component {shown!r} must be lowercase letters and digits "
                "separated by '.', '_', '__' or '-'",
            )


def _is_address(value: str) -> bool:
    if value.startswith("["):
        host, sep, port = value[1:].partition("]")
        if port and not (port.startswith(":") and _valid_port(port[1:])):
            return False
        if not _IPV6.fullmatch(host):
            return False
        try:
            return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) and bool(sep)
        except ValueError:
            return False
    host, sep, port = value.partition(":")
    if sep and not _valid_port(port):
        return False
    if not host or len(host) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) and len(label) <= 63 for label in host.split("."))


def _valid_port(port: str) -> bool:
    return bool(_PORT.fullmatch(port)) and 0 < int(port) < 65536
