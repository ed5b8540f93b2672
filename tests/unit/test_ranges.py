"""Range headers on blob GETs: which bytes a client gets, and when it gets 416."""

from __future__ import annotations

import pytest
from proxy.api.blobs import _parse_range
from proxy.errors import ErrorCode, RegistryError

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 1)),
        ("bytes=0-9", (0, 10)),
        ("bytes=10-19", (10, 20)),
        ("bytes=999-999", (999, 1000)),
        ("bytes=0-999", (0, 1000)),
        ("bytes=500-5000", (500, 1000)),
        ("bytes=500-", (500, 1000)),
        ("bytes=0-", (0, 1000)),
        ("bytes=999-", (999, 1000)),
        ("bytes=-1", (999, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-1000", (0, 1000)),
        ("bytes=-5000", (0, 1000)),
        (" bytes=1-2 ", (1, 3)),
    ],
)
def test_satisfiable_ranges_give_start_and_exclusive_end(header: str, expected: tuple[int, int]) -> None:
    assert _parse_range(header, SIZE) == expected


def test_the_range_selects_the_bytes_a_client_asked_for() -> None:
    blob = bytes(range(256)) * 4
    cases = {"bytes=3-6": blob[3:7], "bytes=1000-": blob[1000:], "bytes=-24": blob[-24:]}
    for header, wanted in cases.items():
        found = _parse_range(header, len(blob))
        assert found is not None
        start, end = found
        assert blob[start:end] == wanted


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1001", "bytes=5000-", "bytes=-0"])
def test_unsatisfiable_ranges_are_416_with_the_size(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        _parse_range(header, SIZE)
    err = info.value
    assert err.code is ErrorCode.RANGE_INVALID
    assert err.status == 416
    assert err.headers["Content-Range"] == f"bytes */{SIZE}"


def test_any_start_is_past_the_end_of_an_empty_blob() -> None:
    with pytest.raises(RegistryError) as info:
        _parse_range("bytes=0-", 0)
    assert info.value.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=1-a",
        "bytes=a-1",
        "bytes=5-2",
        "bytes 0-1",
        "bytes:0-1",
        "items=0-1",
        "Bytes=0-1x",
        "bytes=0-1,5-6",
        "bytes=0-1, 5-6",
        "bytes=-1,-2",
        "bytes=--1",
        "bytes=1--2",
        "bytes=+1-2",
        "bytes=0x10-0x20",
    ],
)
def test_malformed_and_multi_range_headers_are_ignored(header: str) -> None:
    assert _parse_range(header, SIZE) is None


def outcome(header: str) -> tuple[int, int] | int | None:
    try:
        return _parse_range(header, SIZE)
    except RegistryError as err:
        return err.status


def test_huge_numbers_are_a_range_answer_not_a_server_error() -> None:
    # Python refuses int() of more than 4300 digits; a header this long still fits in 8 KiB.
    digits = "9" * 5000
    assert outcome(f"bytes={digits}-") in (416, None)
    assert outcome(f"bytes=0-{digits}") in ((0, SIZE), None)
    assert outcome(f"bytes=-{digits}") in ((0, SIZE), None)


def test_no_header_serves_the_whole_blob() -> None:
    assert _parse_range(None, SIZE) is None


def test_unknown_size_serves_the_whole_blob() -> None:
    # Streaming a miss whose size is not known yet: no range can be checked.
    assert _parse_range("bytes=0-9", None) is None
