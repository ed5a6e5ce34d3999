"""Text for the dashboard's cells: bars, sparklines, durations, slot counts.

Pure functions over numbers, so the look is testable without a terminal and the same in the
live table, the detail screen and the SVG screenshot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

BLOCKS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"


def slots(value: float) -> str:
    """Whole numbers without a decimal point; decaying occupancy with one decimal."""
    if math.isclose(value, round(value), abs_tol=0.05):
        return str(round(value))
    return f"{value:.1f}"


def bar(fraction: float, width: int = 10) -> str:
    """A horizontal bar with eighth-cell resolution, always exactly `width` cells."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (BLOCKS[part] if part and full < width else "")
    return text.ljust(width, "░" if fraction < 1 else "█")[:width]


def sparkline(values: Iterable[float], width: int = 20) -> str:
    """The last `width` fractions (0..1) as block characters, padded on the left."""
    tail = list(values)[-width:]
    top = len(SPARKS) - 1
    chars = [SPARKS[min(top, max(0, math.ceil(min(max(v, 0.0), 1.0) * top)))] for v in tail]
    return "".join(chars).rjust(width)


def duration(seconds: float) -> str:
    """Compact and sortable by eye: 40ms, 9.5s, 4m05s, 2h03m, 3d04h; negative means already past."""
    if seconds < 0:
        return "-" + duration(-seconds)
    whole = int(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock_time(at: float) -> str:
    """Local wall-clock time of an event, to the second."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def rate(per_second: float) -> str:
    return "-" if per_second == 0 else f"{per_second:g}/s"
