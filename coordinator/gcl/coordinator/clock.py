"""Time as the state machine sees it: injected, so tests can move it by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds: deadlines are measured on this, immune to wall-clock jumps."""
        ...

    def wall(self) -> float:
        """Unix seconds: only for what humans read (granted at, created at)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
