"""Numbers on the status page as an operator reads them: sizes, durations, "expires in", "ago"."""

from __future__ import annotations

import time

import pytest
from proxy.humanize import ago, human_bytes, human_duration, until

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (KiB, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (74_526, "72.8 KiB"),
        (MiB, "1.0 MiB"),
        (5 * MiB + 512 * KiB, "5.5 MiB"),
        (20 * GiB, "20.0 GiB"),
        (3 * TiB, "3.0 TiB"),
        # TiB is the largest unit: a petabyte cache is counted in TiB, not cut short.
        (2048 * TiB, "2048.0 TiB"),
        (-2 * KiB, "-2.0 KiB"),
        (12.4, "12 B"),
    ],
)
def test_bytes_use_binary_units_with_one_decimal(value: float, shown: str) -> None:
    assert human_bytes(value) == shown


@pytest.mark.parametrize(("value", "shown"), [(MiB - 1, "1.0 MiB"), (GiB - 1, "1.0 GiB"), (TiB - 1, "1.0 TiB"),
                                             (MiB - 51, "1.0 MiB"), (MiB - 52, "1023.9 KiB")])
def test_a_size_just_below_a_unit_rounds_up_into_that_unit(value: int, shown: str) -> None:
    assert human_bytes(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.9, "0 s"),
        (59, "59 s"),
        (59.99, "59 s"),
        (60, "1 min"),
        (61, "1 min"),
        (3599, "59 min"),
        (3600, "1 h 0 min"),
        (3 * 3600 + 12 * 60 + 40, "3 h 12 min"),
        (86399, "23 h 59 min"),
        (86400, "1 d 0 h"),
        (9 * 86400 + 5 * 3600 + 59 * 60, "9 d 5 h"),
        (400 * 86400, "400 d 0 h"),
        (-90, "1 min"),
    ],
)
def test_durations_show_the_two_largest_units(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        (NOW + 40 * 60, "in 40 min"),
        (NOW + 11 * 3600 + 60, "in 11 h 1 min"),
        (NOW, "in 0 s"),
        (NOW - 30, "30 s ago (expired)"),
        (NOW - 2 * 86400, "2 d 0 h ago (expired)"),
        (None, "–"),
    ],
)
def test_until_says_how_long_a_credential_has_left_or_that_it_expired(stamp: float | None, shown: str) -> None:
    assert until(stamp, NOW) == shown


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        (NOW, "0 s ago"),
        (NOW - 5, "5 s ago"),
        (NOW - 7200, "2 h 0 min ago"),
        (None, "never"),
    ],
)
def test_ago_says_how_long_since_an_event(stamp: float | None, shown: str) -> None:
    assert ago(stamp, NOW) == shown


def test_until_and_ago_default_to_the_current_time() -> None:
    now = time.time()
    assert until(now + 3 * 3600 + 30) == "in 3 h 0 min"
    assert until(now - 3600 - 30) == "1 h 0 min ago (expired)"
    assert ago(now - 125) == "2 min ago"
