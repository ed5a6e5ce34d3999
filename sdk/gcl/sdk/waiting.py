"""Why am I blocked: what a waiting request learns from the coordinator, and how it says it.

While `acquire` waits, the SDK asks the coordinator (`wait.inspect`) where the request stands:
its place in each limit's queue, who holds those limits and for how long, and how long leases
there usually last. `Waiting` carries those facts to the log, to an `on_wait` callback and to
`AcquireTimeout`; `estimate_wait` turns them into a rough "may run in".

    waiting 12s for 1 slot on gpu:gpu-1: 3rd in line of 4, 2/2 occupied by
    gpu-2@node-7 pid 4242 [train] for 4m05s, gpu-3@node-8 pid 17 for 10s, usual hold 2m10s;
    may run in ~2m
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gcl.protocol import Standing, WaitDetail
from gcl.sdk import format as fmt


@dataclass(frozen=True)
class Waiting:
    """Where a waiting request stands, as the coordinator said `waited_seconds` into the wait."""

    request_id: str
    names: tuple[str, ...]
    occupy: int
    waited_seconds: float
    standings: tuple[Standing, ...]
    estimate_seconds: float | None  # None: no lease on some limit has ended yet to judge by

    @classmethod
    def from_detail(cls, detail: WaitDetail, names: Sequence[str]) -> Waiting:
        standings = tuple(detail.standings)
        return cls(
            request_id=detail.request_id,
            names=tuple(names),
            occupy=detail.occupy,
            waited_seconds=detail.waited_seconds,
            standings=standings,
            estimate_seconds=estimate_wait(standings, detail.occupy),
        )

    @property
    def positions(self) -> dict[str, int]:
        """The 0-based place in each limit's queue."""
        return {s.name: s.position for s in self.standings}

    @property
    def holders(self) -> dict[str, list[str]]:
        """Per limit, who holds it (at most 10 each), as `gpu-2@node-7 pid 42 [train]`."""
        return {s.name: [fmt.holder(h.holder) for h in s.holders] for s in self.standings}

    def where(self) -> str:
        """Its standing on each limit and the estimate, without the leading `waiting ...`."""
        named = len(self.standings) > 1  # one limit: the head line named it already
        parts = [_standing(s, named) for s in self.standings]
        return f"{'; '.join(parts)}; {_estimate(self.estimate_seconds, self._full())}"

    def _full(self) -> bool:
        """Some enforced limit has no room for it now (so "any moment" means overdue)."""
        return any(s.active and s.occupied + self.occupy > s.limit for s in self.standings)

    def __str__(self) -> str:
        return describe(self)


OnWait = Callable[[Waiting], None]


def describe(waiting: Waiting) -> str:
    """One line for a log or an error message: place, holders, usual hold, estimate."""
    slots = "1 slot" if waiting.occupy == 1 else f"{waiting.occupy} slots"
    head = (
        f"waiting {fmt.duration(waiting.waited_seconds)} for {slots} on {', '.join(waiting.names)}"
    )
    return f"{head}: {waiting.where()}"


def _standing(s: Standing, named: bool) -> str:
    label = f"{s.name}: " if named else ""
    if not s.active:
        return f"{label}not enforced (dry run)"
    text = f"{label}{fmt.ordinal(s.position + 1)} in line of {s.waiters}, "
    text += f"{fmt.occupancy(s.occupied, s.limit)} occupied"
    if s.holders:
        text += " by " + ", ".join(
            fmt.holding(h.holder, h.held_seconds, h.occupy) for h in s.holders
        )
        if s.leases > len(s.holders):
            text += f" and {s.leases - len(s.holders)} more"
    if s.avg_hold_seconds > 0:
        text += f", usual hold {fmt.duration(s.avg_hold_seconds)}"
    return text


def _estimate(seconds: float | None, full: bool) -> str:
    if seconds is None:
        return "no estimate yet (no lease there has ended to judge by)"
    if seconds < 1:
        overdue = " (its holders are past the usual hold)" if full else ""
        return f"may run any moment{overdue}"
    return f"may run in ~{fmt.duration(seconds)}"


def estimate_wait(standings: Sequence[Standing], occupy: int) -> float | None:
    """Seconds until the request may run: the slowest of its enforced limits. Rough by design.

    On each limit, holders are assumed to hold for the usual time (`avg_hold_seconds`), and
    each waiter ahead to want as many slots as this one. None when a limit has no hold time
    to judge by yet.
    """
    worst = 0.0
    for standing in standings:
        if not standing.active:
            continue
        seconds = _estimate_one(standing, occupy)
        if seconds is None:
            return None
        worst = max(worst, seconds)
    return worst


def _estimate_one(s: Standing, occupy: int) -> float | None:
    need = (s.position + 1) * occupy  # slots that must free before this request fits
    have = max(0.0, s.limit - s.occupied)
    if have >= need:
        return 0.0
    usual = s.avg_hold_seconds
    if usual <= 0:
        return None
    frees = [(max(0.0, usual - h.held_seconds), float(h.occupy)) for h in s.holders]
    unlisted = max(0.0, s.occupied - sum(h.occupy for h in s.holders))
    if unlisted and s.leases > len(s.holders):
        frees.append((usual / 2, unlisted))  # holders not listed: half-way through, on average
    at = 0.0
    for at, slots in sorted(frees):
        have += slots
        if have >= need:
            return at
    # every current holder is gone: the rest of the queue turns the limit over every `usual`
    return at + (need - have) * usual / max(s.limit, 1)
