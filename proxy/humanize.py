"""Numbers as people read them: 1.2 GiB, 3 h 12 min, expires in 40 min."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["ago", "human_bytes", "human_duration", "timestamp", "until"]


def timestamp(stamp: float) -> str:
    """RFC 3339 in UTC to the second, as the admin API answers: 2026-12-03T17:31:41Z."""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        shown = f"{value:.0f}" if unit == "B" else f"{value:.1f}"
        # Compare what will be shown, so 1 MiB - 1 byte reads "1.0 MiB", not "1024.0 KiB".
        if abs(float(shown)) < 1024 or unit == "TiB":
            return f"{shown} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def until(stamp: float | None, now: float | None = None) -> str:
    if stamp is None:
        return "–"
    left = stamp - (time.time() if now is None else now)
    return f"in {human_duration(left)}" if left >= 0 else f"{human_duration(left)} ago (expired)"


def ago(stamp: float | None, now: float | None = None) -> str:
    if stamp is None:
        return "never"
    return f"{human_duration((time.time() if now is None else now) - stamp)} ago"
