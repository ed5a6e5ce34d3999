"""The one look of gcl's figures (gcl.sdk.format), pinned: CLI, dashboard and alerts share it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from gcl.protocol import Holder
from gcl.sdk import format as fmt


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clock times are local: pin the zone so the expected text is the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0"),
        (0.0, "0"),
        (-0.0, "0"),
        (3, "3"),
        (3.0, "3"),
        (2.46, "2.46"),
        (1.35, "1.35"),
        (4.99, "4.99"),
        (4.999, "5"),  # rounded to two places
        (2.5, "2.5"),
        (0.5, "0.5"),
        (0.123, "0.12"),
        (0.0123, "0.012"),  # small fractions keep two significant digits...
        (0.001, "0.001"),
        (0.00004, "0"),  # ...down to 0.0001: below that it is decay noise
        (-1.5, "-1.5"),
        (-0.00001, "0"),
        (1_000_000, "1000000"),
        (math.inf, "inf"),
    ],
)
def test_number(value: float, text: str) -> None:
    assert fmt.number(value) == text


def test_occupancy() -> None:
    assert fmt.occupancy(4.99, 5) == "4.99/5"
    assert fmt.occupancy(0, 3) == "0/3"
    assert fmt.occupancy(2.0, 2) == "2/2"
    assert fmt.occupancy(7, 0) == "7/0"


@pytest.mark.parametrize(
    "used, total, width, fine, text",
    [
        (0, 1, 10, True, "░░░░░░░░░░"),
        (0.5, 1, 10, True, "█████░░░░░"),
        (1, 1, 4, True, "████"),
        (3, 2, 4, True, "████"),  # over-full: all filled, never longer
        (2, 3, 10, True, "██████▋░░░"),
        (2, 3, 10, False, "███████░░░"),
        (0.001, 1, 10, True, "▏░░░░░░░░░"),  # any use shows
        (0.001, 1, 10, False, "█░░░░░░░░░"),
        (4.99, 5, 10, True, "█████████▉"),  # short of full leaves a gap
        (0.999, 1, 10, False, "█████████░"),
        (-1, 5, 4, True, "░░░░"),
        (1, 0, 4, False, "████"),  # a 0-slot limit in use is full
        (0, 0, 4, False, "░░░░"),
        (math.nan, 1, 3, True, "░░░"),
        (1, 1, 0, True, ""),
    ],
)
def test_bar(used: float, total: float, width: int, fine: bool, text: str) -> None:
    assert fmt.bar(used, total, width=width, eighths=fine) == text


def test_bar_defaults_to_a_share_of_one_and_is_always_its_width() -> None:
    assert fmt.bar(0.25) == "██▌░░░░░░░"
    assert {len(fmt.bar(i / 97, width=13)) for i in range(-5, 120)} == {13}


def test_sparkline() -> None:
    assert fmt.sparkline([0, 1], 4) == "  ▁█"
    assert fmt.sparkline([0, 0.01, 0.5, 1]) == " " * 16 + "▁▂▅█"
    assert fmt.sparkline([-1, 2], 2) == "▁█"  # clamped to 0..1
    assert fmt.sparkline(range(10), 3) == "███"  # only the last `width` samples
    assert fmt.sparkline([], 3) == "   "
    assert fmt.sparkline(iter([0.5]), 1) == "▅"


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (0.0004, "0ms"),
        (0.04, "40ms"),
        (0.29, "290ms"),  # float error does not make it 289ms
        (0.9996, "999ms"),  # truncated, never rounded up into the next unit
        (1, "1.0s"),
        (5, "5.0s"),
        (9.5, "9.5s"),
        (9.96, "9.9s"),
        (10, "10s"),
        (45.7, "45s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (245, "4m05s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (7380, "2h03m"),
        (86_399, "23h59m"),
        (86_400, "1d00h"),
        (3 * 86_400 + 4 * 3600 + 59, "3d04h"),
        (400 * 86_400, "400d00h"),
        (-3, "-3.0s"),
        (-0.04, "-40ms"),
        (-245, "-4m05s"),
        (math.inf, "∞"),
        (math.nan, "-"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_since() -> None:
    assert fmt.since(1000.0, now=1245.0) == "4m05s"
    assert fmt.since(1000.0, now=1000.04) == "40ms"
    assert fmt.since(1000.0, now=1000.0) == "0s"
    assert fmt.since(1010.0, now=1000.0) == "0s"  # another machine's clock ahead: not negative
    assert fmt.since(time.time() - 3600) == "1h00m"  # defaults to this machine's clock


def test_clock_time(utc: None) -> None:
    at = datetime(2025, 1, 31, 14, 3, 7, 42_000).timestamp()
    assert fmt.clock_time(at) == "14:03:07"
    assert fmt.clock_time(at, date=True) == "2025-01-31 14:03:07"
    assert fmt.clock_time(at, millis=True) == "14:03:07.042"
    assert fmt.clock_time(at, date=True, millis=True) == "2025-01-31 14:03:07.042"
    assert fmt.clock_time(0, date=True) == "1970-01-01 00:00:00"


def test_rate() -> None:
    assert fmt.rate(0) == "-"
    assert fmt.rate(2.5) == "2.5/s"
    assert fmt.rate(2) == "2/s"
    assert fmt.rate(1 / 3) == "0.33/s"
    assert fmt.rate(0.001) == "0.001/s"


@pytest.mark.parametrize(
    "holder, label, text",
    [
        (
            Holder(worker_id="gpu-1", host="host-a", pid=42, label="train-7"),
            True,
            "gpu-1@host-a pid 42 [train-7]",
        ),
        (
            Holder(worker_id="gpu-1", host="host-a", pid=42, label="train-7"),
            False,
            "gpu-1@host-a pid 42",
        ),
        (Holder(worker_id="gpu-1", host="host-a", pid=42), True, "gpu-1@host-a pid 42"),
        (Holder(worker_id="gpu-1"), True, "gpu-1"),
        (Holder(host="host-a", pid=42), True, "?@host-a pid 42"),
        (Holder(pid=42), True, "? pid 42"),
        (Holder(), True, "unknown holder"),
        (Holder(label="train-7"), True, "unknown holder [train-7]"),
        (Holder(label="train-7"), False, "unknown holder"),
        (None, True, "unknown holder"),
    ],
)
def test_holder(holder: Holder | None, label: bool, text: str) -> None:
    assert fmt.holder(holder, label=label) == text


def test_holder_can_leave_unknown_holders_out_of_a_line() -> None:
    assert fmt.holder(None, unknown="") == ""
    assert fmt.holder(Holder(), unknown="") == ""
    assert fmt.holder(Holder(label="x"), unknown="") == "[x]"
    assert fmt.holder(Holder(worker_id="w"), unknown="") == "w"
