"""Logging set-up: text or JSON lines, and SDK loggers kept from leaking secrets.

Log lines quote what clients send (paths, names, references), so both
formats escape control characters in every field: a client cannot end a
line early, forge one, or put a NUL or a terminal escape into the log. Text
escapes them as ``\\n``, ``\\x00``, ``\\u2028``; a traceback keeps its line
breaks but is indented, so every line at column 0 starts a record the proxy
wrote. JSON is written as ASCII, every control character as a JSON escape
(``\\n``, ``\\u0000``), one object per line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["setup_logging"]

# These log request and response bodies at debug level, and those carry
# minted registry passwords (ECR's authorizationToken) and OAuth tokens.
_SECRET_CHATTER = ("botocore", "boto3", "s3transfer", "urllib3", "google", "google.auth")

# C0, DEL and C1, and the two Unicode line breaks that str.splitlines() and
# some log viewers honour.
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {c: _SHORT.get(chr(c)) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_ESCAPES_BUT_NEWLINE = {c: escaped for c, escaped in _ESCAPES.items() if c != ord("\n")}


def _escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """One line per record; a traceback follows it on indented lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return _escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatStack(stack_info))


def _indented(block: str) -> str:
    return "\n".join("    " + line for line in block.translate(_ESCAPES_BUT_NEWLINE).split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ASCII only: every control character, DEL and C1 included, is escaped.
        return json.dumps(entry, ensure_ascii=True)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _SECRET_CHATTER:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
