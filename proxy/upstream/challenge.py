"""Parse ``WWW-Authenticate`` challenges (RFC 7235) as registries send them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Challenge", "parse_challenges"]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|(?=,)|$)")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header: str) -> list[Challenge]:
    """Return every challenge in the header; malformed trailing parts are dropped.

    A comma separates both parameters and challenges, so a new challenge is
    recognised by a token that is not followed by ``=``.
    """
    challenges: list[Challenge] = []
    pos = 0
    current: Challenge | None = None
    while pos < len(header):
        if header[pos] in ", \t":
            pos += 1
            continue
        param = _PARAM.match(header, pos)
        if param and current is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            current.params[param.group(1).lower()] = value
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if not scheme:
            break
        current = Challenge(scheme.group(1).lower(), {})
        challenges.append(current)
        pos = scheme.end()
    return challenges
