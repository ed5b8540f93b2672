"""The command line's credential flags follow the declared credential fields."""

from __future__ import annotations

from proxy.cli.kinds import _KIND_FLAGS
from proxy.credentials.fields import KIND_FIELDS


def test_every_flag_sets_a_declared_field_of_some_kind() -> None:
    for flag in _KIND_FLAGS:
        assert flag.kinds, f"{flag.flag} sets {flag.field!r}, which no credential kind declares"


def test_every_declared_kind_field_has_a_flag() -> None:
    flagged = {flag.field for flag in _KIND_FLAGS}
    declared = {field.name for fields in KIND_FIELDS.values() for field in fields}
    assert declared == flagged
