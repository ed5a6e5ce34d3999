"""How gcl writes its facts for people: slot counts, durations, bars, times and holders.

The dashboard, the `gcl` command line, alert summaries and the SDK's own log lines (a waiter
saying why it is blocked) all report the same few facts: 4.99 of 5 slots occupied, a lease
held for 4m05s, a waiter queued by `gpu-1@host-a pid 42`. They all print them through this
module, so 40 ms reads `40ms` in a table, a screenshot and an alert alike, and a change of look
is made (and tested, in tests/test_format.py) once.

It lives in the SDK because the dashboard and alerting may import only the SDK and the wire
contract, and because workers log their waiting and holder facts with it too. So it
stays small: pure functions of their arguments (the current time is a parameter where it
matters), standard library only, nothing that loads a terminal or the network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

FULL = "█"
EMPTY = "░"
EIGHTHS = " ▏▎▍▌▋▊▉"  # a partly filled cell, by eighths (index 0 is never drawn)
SPARKS = "▁▂▃▄▅▆▇█"
MAX_PLACES = 4  # below 0.0001 a fraction prints as 0: decay noise, not a held slot
EPSILON = 1e-9  # absorbs float error before flooring (0.29 * 1000 is 289.99999999999994)


class HolderLike(Protocol):
    """Who holds or waits, as `gcl.protocol.Holder` carries it (read only)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def label(self) -> str: ...


def number(value: float) -> str:
    """A slot count or figure: `2` when whole, else at most two decimals (`1.35`, `4.99`).

    Below 0.1 it keeps two significant digits (`0.012`, `0.001`), so a decaying level that is
    not yet zero never prints as `0`; under 0.0001 it does.
    """
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    places = max(2, min(MAX_PLACES, 1 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def occupancy(used: float, total: float) -> str:
    """`4.99/5`: slots occupied of the limit."""
    return f"{number(used)}/{number(total)}"


def bar(used: float, total: float = 1.0, *, width: int = 10, eighths: bool = True) -> str:
    """`█████▌░░░░`: `used` of `total` as a bar of exactly `width` cells.

    `eighths` draws the last cell partly filled (the dashboard); without it cells are whole
    (plain text for pipes). Empty only at zero and full only when full: any use shows at least
    a sliver, and anything short of the total leaves a gap. A limit of 0 slots is full as soon
    as anything is used.
    """
    if width <= 0:
        return ""
    if not used > 0:  # nothing, or NaN
        share = 0.0
    elif not total > 0:
        share = 1.0
    else:
        share = used / total
    per_cell = 8 if eighths else 1
    steps = width * per_cell
    if share >= 1:
        filled = steps
    elif share <= 0:
        filled = 0
    else:
        filled = min(max(round(share * steps), 1), steps - 1)
    whole, part = divmod(filled, per_cell)
    text = FULL * whole + (EIGHTHS[part] if part else "")
    return text + EMPTY * (width - len(text))


def sparkline(values: Iterable[float], width: int = 20) -> str:
    """The last `width` shares (0..1) as `▁▂▃▄▅▆▇█`, right-aligned.

    `▁` is exactly zero; any use at all draws at least `▂`, so idle and nearly idle differ.
    """
    tail = list(values)[-width:] if width > 0 else []
    top = len(SPARKS) - 1
    chars = [SPARKS[min(top, max(0, math.ceil(min(max(v, 0.0), 1.0) * top)))] for v in tail]
    return "".join(chars).rjust(width)


def duration(seconds: float) -> str:
    """Compact and sortable by eye: `0s`, `40ms`, `9.5s`, `45s`, `4m05s`, `2h03m`, `3d04h`.

    Each unit is truncated, never rounded up (0.9996s is `999ms`, 59.9s is `59s`), so a figure
    changes unit exactly at the boundary. Negative means overdue: `-3.0s`.
    """
    if math.isnan(seconds):
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if math.isinf(seconds):
        return "∞"
    if seconds == 0:
        return "0s"
    millis = math.floor(seconds * 1000 + EPSILON)
    if millis < 1000:
        return f"{millis}ms"
    tenths = math.floor(seconds * 10 + EPSILON)
    if tenths < 100:
        return f"{tenths // 10}.{tenths % 10}s"
    whole = math.floor(seconds + EPSILON)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def since(wall: float, now: float | None = None) -> str:
    """How long ago a wall-clock time was, as a `duration`: `4m05s`.

    `now` defaults to this machine's clock. A time in the future (another machine's clock
    running ahead) reads `0s`, not a negative age.
    """
    current = time.time() if now is None else now
    return duration(max(0.0, current - wall))


def clock_time(at: float, *, date: bool = False, millis: bool = False) -> str:
    """A wall-clock time in the local zone: `14:03:07`; with `date` `2025-01-31 14:03:07`;
    with `millis` `14:03:07.042`."""
    stamp = datetime.fromtimestamp(at)
    text = stamp.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{stamp.microsecond // 1000:03d}" if millis else text


def rate(per_second: float) -> str:
    """`2.5/s`, or `-` for no rate at all."""
    return "-" if per_second == 0 else f"{number(per_second)}/s"


def ordinal(n: int) -> str:
    """`1st`, `2nd`, `3rd`, `4th`, `11th`, `22nd`: a place in a queue, counted from 1."""
    teens = 10 <= n % 100 <= 20
    return f"{n}{'th' if teens else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def holding(who: HolderLike | None, held_seconds: float, occupy: int = 1) -> str:
    """`gpu-2@node-7 pid 42 [train] for 4m05s` (`, 2 slots` when it holds more than one)."""
    slots = f", {occupy} slots" if occupy != 1 else ""
    return f"{holder(who)} for {duration(held_seconds)}{slots}"


def holder(who: HolderLike | None, *, label: bool = True, unknown: str = "unknown holder") -> str:
    """`gpu-1@host-a pid 42 [train-7]`: what an operator needs to find the process.

    Parts that are not known are left out (`gpu-1`, `?@host-a`); with no worker, host or pid
    at all it is `unknown` (pass `unknown=""` to leave such holders out of a line). `label=False`
    names the process only, leaving out what it said it was doing.
    """
    if who is None:
        return unknown
    if who.worker_id or who.host or who.pid:
        text = who.worker_id or "?"
        text += f"@{who.host}" if who.host else ""
        text += f" pid {who.pid}" if who.pid else ""
    else:
        text = unknown
    if label and who.label:
        text = f"{text} [{who.label}]" if text else f"[{who.label}]"
    return text
