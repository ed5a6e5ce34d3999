"""What the dashboard knows, independent of Textual: limits, occupancy history, recent events.

The feed turns NATS traffic into `Batch`es (latest figures per limit, so a burst of thousands
of events collapses into one update per limit); the app applies them to the `Board`, or holds
them while paused. Keeping this pure makes coalescing and sorting testable without a terminal.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from dataclasses import dataclass, field

from gcl.protocol import Event, LimitInfo

SORTS = ("name", "occupancy", "waiters")
MAX_BATCH_EVENTS = 200
MAX_LOG_EVENTS = 500
HISTORY_SAMPLES = 90  # at the default 5 s per sample: the last 7.5 minutes


@dataclass
class Batch:
    """Changes gathered between two UI updates. `snapshot`: `limits` is the complete set."""

    limits: dict[str, LimitInfo] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    snapshot: bool = False

    @classmethod
    def full(cls, limits: list[LimitInfo]) -> Batch:
        return cls(limits={info.name: info for info in limits}, snapshot=True)

    def add_event(self, event: Event) -> None:
        """Keep only the newest figures per limit: that is the coalescing."""
        self.add_figures(event)
        self.events.append(event)
        if len(self.events) > MAX_BATCH_EVENTS * 2:
            del self.events[:-MAX_BATCH_EVENTS]

    def add_figures(self, event: Event) -> None:
        """The event's effect on the limits (new figures, deletions), without logging it."""
        if event.kind == "limit.deleted":
            for name in event.names:
                self.limits.pop(name, None)
                self.deleted.add(name)
        for info in event.limits:
            self.limits[info.name] = info
            self.deleted.discard(info.name)

    def merge(self, later: Batch) -> None:
        """Fold a later batch into this one, as if both had been one."""
        if later.snapshot:
            self.snapshot = True
            self.limits = dict(later.limits)
            self.deleted = set(later.deleted)
        else:
            for name in later.deleted:
                self.limits.pop(name, None)
                self.deleted.add(name)
            for name, info in later.limits.items():
                self.limits[name] = info
                self.deleted.discard(name)
        self.events = (self.events + later.events)[-MAX_BATCH_EVENTS:]

    @property
    def size(self) -> int:
        return len(self.limits) + len(self.deleted) + len(self.events)

    def __bool__(self) -> bool:
        return self.snapshot or self.size > 0

    def touches(self, name: str) -> bool:
        return (
            self.snapshot
            or name in self.limits
            or name in self.deleted
            or any(name in e.names for e in self.events)
        )


def fraction(info: LimitInfo) -> float:
    """Occupancy as a share of the limit; a zero-slot limit with demand counts as full."""
    if info.limit <= 0:
        return 1.0 if info.occupied > 0 or info.waiters > 0 else 0.0
    return min(max(info.occupied / info.limit, 0.0), 1.0)


def saturated(info: LimitInfo) -> bool:
    """Demand exceeds supply: a queue has formed on an active limit."""
    return info.active and info.waiters > 0


def name_matches(name: str, pattern: str) -> bool:
    """Shell patterns (`gpu:*`) when the text has wildcards, else a case-blind substring."""
    pattern = pattern.strip()
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern.lower() in name.lower()


def kind_matches(kind: str, wanted: str | None) -> bool:
    """`None` is every kind; `lease` is every `lease.*` kind; `lease.granted` is just that."""
    return wanted is None or kind == wanted or kind.startswith(wanted + ".")


class Board:
    """The dashboard's state: the latest figures per limit, their history, the event log."""

    def __init__(self, history_samples: int = HISTORY_SAMPLES) -> None:
        self.limits: dict[str, LimitInfo] = {}
        self.history: dict[str, deque[float]] = {}
        self.events: deque[Event] = deque(maxlen=MAX_LOG_EVENTS)
        self.history_samples = history_samples
        self._peaks: dict[str, float] = {}

    def apply(self, batch: Batch) -> None:
        if batch.snapshot:
            for gone in set(self.limits) - set(batch.limits):
                self._drop(gone)
        for name in batch.deleted:
            self._drop(name)
        for name, info in batch.limits.items():
            self.limits[name] = info
            self.history.setdefault(name, deque(maxlen=self.history_samples))
            self._peaks[name] = max(self._peaks.get(name, 0.0), fraction(info))
        self.events.extendleft(batch.events)

    def _drop(self, name: str) -> None:
        self.limits.pop(name, None)
        self.history.pop(name, None)
        self._peaks.pop(name, None)

    def sample(self) -> None:
        """One point of each sparkline: the peak since the last sample, so spikes show."""
        for name, info in self.limits.items():
            now = fraction(info)
            peak = max(self._peaks.get(name, 0.0), now)
            self.history.setdefault(name, deque(maxlen=self.history_samples)).append(peak)
            self._peaks[name] = now

    def seed_history(self, name: str, values: list[float]) -> None:
        self.history[name] = deque(values, maxlen=self.history_samples)

    def view(self, pattern: str = "", sort: str = "name") -> list[LimitInfo]:
        rows = [info for name, info in self.limits.items() if name_matches(name, pattern)]
        if sort == "occupancy":
            rows.sort(key=lambda i: (-fraction(i), -i.occupied, i.name))
        elif sort == "waiters":
            rows.sort(key=lambda i: (-i.waiters, -fraction(i), i.name))
        else:
            rows.sort(key=lambda i: i.name)
        return rows

    def recent_events(
        self, kind: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[Event]:
        """Newest first, filtered by kind family and by limit name."""
        found: list[Event] = []
        for event in self.events:
            if kind_matches(event.kind, kind) and (name is None or name in event.names):
                found.append(event)
                if len(found) >= limit:
                    break
        return found
