"""A limit: its settings and the live figures derived from the leases that hold it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gcl.coordinator.trusted import built
from gcl.protocol import LimitInfo

EPSILON = 1e-9
RECENT_WEIGHT = 0.2  # each ended hold's share of the recent mean (an exponential average)


@dataclass(slots=True)
class Limit:
    """One named limit. `held` is kept equal to the sum of its live leases' `occupy`."""

    name: str
    limit: int
    active: bool = True
    slot_decay_per_second: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    fencing_token: int = 0
    denied: int = 0
    hold_seconds_total: float = 0.0
    hold_count: int = 0
    decay_level: float = 0.0
    decay_at: float = 0.0
    is_template: bool = False
    held: int = 0
    lease_ids: set[str] = field(default_factory=set)
    recent_hold_seconds: float = 0.0  # in memory only: after a restart the mean stands in
    template: str | None = None  # the template that created it (in memory: not stored)

    def snapshot(self) -> Limit:
        """A copy to commit: the live object keeps changing while the commit waits its turn."""
        return replace(self)

    def level(self, now: float) -> float:
        """Slots still taken by past rate grants, draining at `slot_decay_per_second`."""
        if self.decay_level <= 0:
            return 0.0
        drained = self.slot_decay_per_second * max(0.0, now - self.decay_at)
        return max(0.0, self.decay_level - drained)

    def settle(self, now: float) -> None:
        """Fold the decay so far into `decay_level`, before the rate or level changes."""
        self.decay_level = self.level(now)
        self.decay_at = now

    def occupied(self, now: float) -> float:
        return self.held + self.level(now)

    def has_room_enforced(self, occupy: int, now: float) -> bool:
        return self.occupied(now) + occupy <= self.limit + EPSILON

    def room_at(self, occupy: int, now: float) -> float | None:
        """When decay alone will make room for `occupy`, or None if leases block it."""
        need = self.limit - self.held - occupy
        if need < 0 or self.slot_decay_per_second <= 0:
            return None
        excess = self.level(now) - need
        return now + max(0.0, excess) / self.slot_decay_per_second

    def record_hold(self, seconds: float, *, recent: bool = True) -> None:
        """Count an ended hold; `recent=False` keeps an outlier (a script's day-long lease)
        out of the recent mean that waiters' estimates use."""
        seconds = max(0.0, seconds)
        self.hold_seconds_total += seconds
        self.hold_count += 1
        if recent:
            last = self.recent_hold_seconds
            self.recent_hold_seconds = (
                seconds if not last else last + RECENT_WEIGHT * (seconds - last)
            )

    def typical_hold(self) -> float:
        """How long a lease holds this limit lately: the recent mean, else the mean of all."""
        if self.recent_hold_seconds:
            return self.recent_hold_seconds
        return self.hold_seconds_total / self.hold_count if self.hold_count else 0.0

    def info(self, now: float, waiters: int) -> LimitInfo:
        avg = self.hold_seconds_total / self.hold_count if self.hold_count else 0.0
        # built from trusted state on every event: skip re-validation (a profile hot spot)
        return built(
            LimitInfo,
            name=self.name,
            limit=self.limit,
            active=self.active,
            slot_decay_per_second=self.slot_decay_per_second,
            occupied=round(self.occupied(now), 6),
            held=self.held,
            leases=len(self.lease_ids),
            waiters=waiters,
            denied=self.denied,
            avg_occupancy_seconds=round(avg, 6),
            fencing_token=self.fencing_token,
            is_template=self.is_template,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
