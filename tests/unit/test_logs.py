"""Log formatters: a value from a client cannot forge a record, in text or JSON."""

from __future__ import annotations

import json
import logging
import sys

from proxy.cli.logs import JsonFormatter, TextFormatter

HOSTILE = "a\r\nFAKE INFO forged\x00\x1b[2J\x7f\x85\u2028\u2029b"


def _record(*, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("proxy.test", logging.WARNING, __file__, 1, "bad path %s", (HOSTILE,), exc_info)


def test_text_escapes_every_control_character_and_indents_a_traceback() -> None:
    text = TextFormatter("%(levelname)s %(name)s: %(message)s").format(_record(exc=True))
    first, *traceback = text.split("\n")
    assert first == "WARNING proxy.test: bad path a\\r\\nFAKE INFO forged\\x00\\x1b[2J\\x7f\\x85\\u2028\\u2029b"
    assert traceback and all(line.startswith("    ") for line in traceback)
    # A traceback keeps its line breaks, even one in the exception's message, but no line of it starts a record.
    assert traceback[-2:] == ["    ValueError: a\\r", "    FAKE INFO forged\\x00\\x1b[2J\\x7f\\x85\\u2028\\u2029b"]
    assert text.splitlines() == text.split("\n")


def test_json_is_one_ascii_line_that_reads_back_unchanged() -> None:
    line = JsonFormatter().format(_record(exc=True))
    assert line.isascii() and line.isprintable() and "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == f"bad path {HOSTILE}" and entry["exception"].endswith(f"ValueError: {HOSTILE}")
