"""What the admin commands print: tables, ``key: value`` lines, the API's JSON, and timestamps.

Every value the server sends goes through ``text()`` before it reaches a
terminal. Values may have been typed by anyone with the admin token, so
control characters and escape sequences are replaced; an unset value shows
as ``-``. ``--json`` prints the API's answer as it came, for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.cli.client import AdminError

__all__ = ["items_of", "parse_time", "print_fields", "print_json", "print_table", "text", "yes_no"]


def text(value: object) -> str:
    if value is None or value == "":
        return "-"
    # Values come from the server and may have been typed by anyone with the
    # token; escape sequences must not reach the operator's terminal.
    return "".join(c if c.isprintable() else "?" for c in str(value))


def yes_no(value: object) -> str:
    return "yes" if value is True else "no"


def parse_time(value: object) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` or an offset) as an aware datetime; None if it is not one.

    A timestamp without an offset is taken as UTC, the zone the API speaks.
    """
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def items_of(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects in the answer's ``key`` list; an AdminError when the answer has no such list."""
    items = answer.get(key)
    if not isinstance(items, list):
        raise AdminError(f"the proxy's answer has no {key!r} list; is it an older or newer registry-proxy?")
    return [item for item in items if isinstance(item, dict)]


def print_json(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, indent=2))


def print_table(headers: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        print(f"{key + ':':<{width}} {value}")
