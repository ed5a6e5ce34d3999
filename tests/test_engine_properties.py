"""Random step sequences against the state machine, with its safety rules checked after each step.

Example tests pin single rules; this machine looks for the interleavings nobody thought of:
deletes while waiters stand in several queues, limits lowered under holders, decay and expiry
racing keepalives. Each invariant below is a promise the coordinator makes to its workers.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gcl.coordinator import engine as engine_module
from gcl.coordinator.changes import Changes
from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.waiters import Waiter
from gcl.protocol import (
    AcquireRequest,
    AcquireResult,
    Event,
    LimitCreate,
    LimitUpdate,
    Mode,
    WaitNotice,
)
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"  # every request in these tests is made with it

TEMPLATE = "t:{worker_id}"
LIMIT_NAMES = ["a", "b", "c", TEMPLATE]
ACQUIRE_NAMES = ["a", "b", "c", "t:1", "t:2"]
KEEPALIVE = 2.0
EPSILON = 1e-6
ENDINGS = ("lease.released", "lease.expired", "lease.revoked")
DROPS = ("waiter.timed_out", "waiter.withdrawn", "waiter.rejected")

sizes = st.integers(min_value=0, max_value=4)
decays = st.sampled_from([0.0, 0.0, 0.5, 2.0, 10.0])
pick = st.integers(min_value=0, max_value=1000)
occupies = st.sampled_from([1, 1, 1, 2, 3])
mostly_true = st.sampled_from([True, True, True, False])
T = TypeVar("T")


@dataclass(frozen=True)
class Ask:
    """One acquire's parameters; most runs want plain waiting requests on existing limits."""

    names: tuple[str, ...]
    occupy: int
    wait: bool = True
    mode: Mode = "concurrency"
    strict: bool = False
    ttl: float = 30.0


# Weighted towards requests that can be granted or queued, so runs reach deep states: one
# name, two names in either order (the deadlock-prone shape), or anything at all.
asks = st.one_of(
    st.builds(Ask, names=st.sampled_from(ACQUIRE_NAMES[:3]).map(lambda n: (n,)), occupy=occupies),
    st.builds(
        Ask, names=st.permutations(ACQUIRE_NAMES[:3]).map(lambda n: tuple(n[:2])), occupy=occupies
    ),
    st.builds(
        Ask,
        names=st.lists(st.sampled_from(ACQUIRE_NAMES), min_size=1, max_size=3, unique=True).map(
            tuple
        ),
        occupy=occupies,
        wait=st.sampled_from([True, True, False]),
        mode=st.sampled_from(["concurrency", "concurrency", "rate"]),
        strict=st.booleans(),
        ttl=st.sampled_from([1.0, 5.0, 30.0]),
    ),
)


class EngineMachine(RuleBasedStateMachine):
    """Drives one Engine and keeps a shadow of what its events said, to check them against."""

    def __init__(self) -> None:
        super().__init__()
        SERIAL_IDS.reset()
        self.clock = FakeClock()
        self.engine = Engine(self.clock, keepalive_seconds=KEEPALIVE)
        self.serial = 0
        self.requests: dict[str, AcquireRequest] = {}
        self.concurrency_leases: dict[str, str] = {}  # lease_id -> request_id
        self.rate_leases: dict[str, str] = {}  # lease_id -> request_id
        self.endings: Counter[str] = Counter()
        self.ended_as: dict[str, str] = {}
        self.shadow_queues: dict[str, list[str]] = {}
        self.waiting: set[str] = set()

    # --- observing each step ------------------------------------------------------------

    def observe(self) -> None:
        """Replay the step's events against the shadow queues, checking each grant as it lands."""
        changes = self.engine.take_changes()
        told = self._told(changes)
        left: set[str] = set()
        for event in changes.events:
            self._replay(event, left)
        for request_id in self.waiting - set(self.engine.queues.by_request):
            assert request_id in left or request_id in told, (
                f"waiter {request_id} left the queue with neither an event nor a notice"
            )
        self.waiting = set(self.engine.queues.by_request)

    def _told(self, changes: Changes) -> dict[str, WaitNotice]:
        told: dict[str, WaitNotice] = {}
        for inbox, notice in changes.notices:
            assert inbox == f"inbox.{notice.request_id}", "notice sent to the wrong inbox"
            assert notice.request_id not in told, f"two notices to {notice.request_id}"
            told[notice.request_id] = notice
        return told

    def _replay(self, event: Event, left: set[str]) -> None:
        if event.kind == "waiter.queued":
            self._shadow_queue(event)
        elif event.kind in DROPS:
            self._shadow_remove(event.request_id or "")
            left.add(event.request_id or "")
        elif event.kind == "lease.granted":
            self._check_grant(event)
            self._shadow_remove(event.request_id or "")
            left.add(event.request_id or "")
            self._record_grant(event)
        elif event.kind in ENDINGS:
            lease_id = event.lease_id or ""
            assert lease_id in self.concurrency_leases, f"{event.kind} of unknown {lease_id}"
            self.endings[lease_id] += 1
            self.ended_as[lease_id] = event.kind
        elif event.kind == "limit.deleted":
            self.shadow_queues.pop(event.names[0], None)

    def _shadow_queue(self, event: Event) -> None:
        request_id = event.request_id or ""
        assert request_id not in self.waiting, f"{request_id} queued twice"
        self.waiting.add(request_id)
        for name in event.names:
            self.shadow_queues.setdefault(name, []).append(request_id)

    def _shadow_remove(self, request_id: str) -> None:
        for queue in self.shadow_queues.values():
            if request_id in queue:
                queue.remove(request_id)

    def _check_grant(self, event: Event) -> None:
        """(b) no over-grant and (c) FIFO, judged on the figures right after this grant."""
        request_id = event.request_id or ""
        for info in event.limits:
            if not info.active:
                continue
            assert info.occupied <= info.limit + EPSILON, (
                f"over-grant on {info.name}: occupied {info.occupied} > limit {info.limit}"
            )
            queue = self.shadow_queues.get(info.name, [])
            if request_id in self.waiting:
                assert queue and queue[0] == request_id, (
                    f"{request_id} granted on {info.name} out of turn; queue was {queue}"
                )
            else:
                assert not queue, f"newcomer {request_id} jumped the queue {queue} on {info.name}"

    def _record_grant(self, event: Event) -> None:
        lease_id = event.lease_id or ""
        request = self.requests[event.request_id or ""]
        if request.mode == "concurrency":
            assert lease_id not in self.concurrency_leases, f"lease {lease_id} granted twice"
            self.concurrency_leases[lease_id] = request.request_id
        else:
            self.rate_leases[lease_id] = request.request_id

    # --- limits -------------------------------------------------------------------------

    @initialize(
        sizes=st.lists(st.integers(min_value=1, max_value=2), min_size=3, max_size=3),
        decay=st.sampled_from([0.5, 2.0, 10.0]),
    )
    def start(self, sizes: list[int], decay: float) -> None:
        """Start with three small limits, `c` decaying, so the first steps already contend."""
        for name, size in zip("abc", sizes, strict=True):
            rate = decay if name == "c" else 0.0
            self.engine.create_limit(LimitCreate(name=name, limit=size, slot_decay_per_second=rate))
        self.observe()

    @rule(name=st.sampled_from(LIMIT_NAMES), size=sizes, active=st.booleans(), decay=decays)
    def create_limit(self, name: str, size: int, active: bool, decay: float) -> None:
        existed = name in self.engine.limits
        spec = LimitCreate(name=name, limit=size, active=active, slot_decay_per_second=decay)
        try:
            self.engine.create_limit(spec)
        except Refusal as refusal:
            assert existed and refusal.code == "limit_exists"
        else:
            assert not existed
        self.observe()

    @rule(
        name=st.sampled_from(LIMIT_NAMES),
        size=st.none() | st.sampled_from([0, 1, 1, 2, 3, 4]),
        active=st.none() | st.booleans(),
        decay=st.none() | decays,
    )
    def update_limit(
        self, name: str, size: int | None, active: bool | None, decay: float | None
    ) -> None:
        existed = name in self.engine.limits
        update = LimitUpdate(name=name, limit=size, active=active, slot_decay_per_second=decay)
        try:
            self.engine.update_limit(update)
        except Refusal as refusal:
            assert not existed and refusal.code == "limit_not_found"
        self.observe()

    @precondition(lambda self: len(self.engine.queues) > 0)
    @rule(index=pick)
    def squeeze(self, index: int) -> None:
        """An operator lowers a limit below what a queued waiter asks for: it must be told."""
        waiter = _nth(list(self.engine.queues.by_request.values()), index)
        name = _nth(waiter.names, index)
        size = waiter.request.occupy - 1
        self.engine.update_limit(LimitUpdate(name=name, limit=size))
        self.observe()
        if self.engine.limits[name].active:
            assert waiter.request_id not in self.engine.queues, "a waiter that can never fit"

    @rule(name=st.sampled_from([*LIMIT_NAMES, "t:1"]))
    def delete_limit(self, name: str) -> None:
        holders = set(self.engine.limits[name].lease_ids) if name in self.engine.limits else None
        try:
            released = self.engine.delete_limit(name)
        except Refusal as refusal:
            assert holders is None and refusal.code == "limit_not_found"
        else:
            assert holders is not None and released == len(holders)
            assert not holders & set(self.engine.leases), "holders of a deleted limit live on"
        self.observe()

    # --- acquiring ----------------------------------------------------------------------

    @rule(ask=asks)
    def acquire(self, ask: Ask) -> None:
        self._acquire(ask)

    @rule(ask=asks)
    def acquire_again(self, ask: Ask) -> None:
        """Acquiring is what most steps of a real system are, so it gets two rules' weight."""
        self._acquire(ask)

    def _acquire(self, ask: Ask) -> None:
        self.serial += 1
        request = AcquireRequest(
            secret=SECRET,
            request_id=f"r{self.serial}",
            names=list(ask.names),
            occupy=ask.occupy,
            wait=ask.wait,
            mode=ask.mode,
            strict=ask.strict,
            lease_ttl=ask.ttl,
            notify=f"inbox.r{self.serial}",
        )
        self.requests[request.request_id] = request
        self._send(request)

    @precondition(lambda self: self.requests)
    @rule(index=pick)
    def resend(self, index: int) -> None:
        """At-least-once delivery: a request arrives again, unchanged."""
        request = _nth(list(self.requests.values()), index)
        before = self.engine.lease_by_request.get(request.request_id)
        result = self._send(request)
        if before is not None:
            assert result is not None and result.lease is not None
            assert result.lease.lease_id == before, "a re-sent acquire got a second lease"

    def _send(self, request: AcquireRequest) -> AcquireResult | None:
        try:
            result = self.engine.acquire(request)
        except Refusal as refusal:
            assert refusal.code in {"invalid_request", "limit_not_found", "timeout"}, refusal
            assert refusal.code != "timeout" or not request.wait
            self.observe()
            return None
        queued = request.request_id in self.engine.queues
        assert (result.status == "queued") == queued
        assert request.wait or not queued, "a wait=False request was queued"
        self.observe()
        return result

    # --- holding ------------------------------------------------------------------------

    @precondition(lambda self: self.concurrency_leases or self.rate_leases)
    @rule(index=pick, action=st.sampled_from(["release", "renew", "revoke"]))
    def lease_action(self, index: int, action: str) -> None:
        """Even picks land on live leases, odd ones on any lease ever granted (maybe ended)."""
        known = [*self.concurrency_leases, *self.rate_leases]
        live = [lease_id for lease_id in known if lease_id in self.engine.leases]
        pool = live if index % 2 == 0 and live else known
        lease_id = _nth(pool, index // 2)
        getattr(self, f"_{action}")(lease_id, lease_id in self.engine.leases)
        self.observe()

    def _release(self, lease_id: str, live: bool) -> None:
        ended = self.ended_as.get(lease_id)
        try:
            result = self.engine.release(lease_id, SECRET)
        except Refusal as refusal:
            expected = "lease_not_found" if lease_id in self.rate_leases else "lease_lost"
            assert not live and refusal.code == expected, (refusal.code, ended)
            assert ended != "lease.released", "a second release must answer released=False"
        else:
            assert result.released == live
            assert live or ended == "lease.released"

    def _renew(self, lease_id: str, live: bool) -> None:
        try:
            self.engine.renew(lease_id, SECRET)
        except Refusal as refusal:
            assert not live and refusal.code in {"lease_lost", "lease_not_found"}
        else:
            assert live
            assert self.engine.leases[lease_id].expires_at > self.clock.now()

    def _revoke(self, lease_id: str, live: bool) -> None:
        try:
            self.engine.revoke(lease_id)
        except Refusal as refusal:
            assert not live and refusal.code == "lease_not_found"
        else:
            assert live

    # --- waiting ------------------------------------------------------------------------

    @precondition(lambda self: self.requests)
    @rule(index=pick, action=st.sampled_from(["keepalive", "timeout", "cancelled", "all alive"]))
    def waiter_action(self, index: int, action: str) -> None:
        """Even picks land on queued waiters, odd ones on any request ever sent."""
        if action == "all alive":
            self._keepalive_all()
            return
        queued = list(self.engine.queues.by_request)
        pool = queued if index % 2 == 0 and queued else list(self.requests)
        request_id = _nth(pool, index // 2)
        waiting = request_id in self.engine.queues
        holding = request_id in self.engine.lease_by_request
        if action == "keepalive":
            status = self.engine.keepalive(request_id, SECRET).status
            assert status == ("queued" if waiting else "granted" if holding else "unknown")
        else:
            status = self.engine.withdraw(request_id, SECRET, action).status
            assert status == ("withdrawn" if waiting else "released" if holding else "unknown")
            assert request_id not in self.engine.queues
            assert request_id not in self.engine.lease_by_request
        self.observe()

    def _keepalive_all(self) -> None:
        """Live workers send keepalives on a timer; this is that timer firing for all of them."""
        for request_id in list(self.engine.queues.by_request):
            assert self.engine.keepalive(request_id, SECRET).status == "queued"
        self.observe()

    # --- time ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0, 2.0, 7.0, 31.0]), tick=mostly_true)
    def pass_time(self, seconds: float, tick: bool) -> None:
        """Time moves; the service's timer usually fires after it, but not always at once."""
        self.clock.advance(seconds)
        if tick:
            self._tick()

    def _tick(self) -> None:
        """(g) after a tick, the next deadline is strictly ahead: a due one would spin the timer."""
        self.engine.tick()
        self.observe()
        now = self.clock.now()
        deadline = self.engine.next_deadline()
        if self.engine.leases or len(self.engine.queues):
            assert deadline is not None, "live leases or waiters, but no deadline to tick at"
        assert deadline is None or deadline > now, (
            f"next_deadline() {deadline} is not after now {now} right after tick()"
        )

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def held_matches_live_leases(self) -> None:
        """(a) every limit's figures are derived from exactly its live leases."""
        for name, limit in self.engine.limits.items():
            mine = {i for i, lease in self.engine.leases.items() if name in lease.names}
            assert limit.lease_ids == mine, f"{name}: lease_ids {limit.lease_ids} != {mine}"
            total = sum(self.engine.leases[i].occupy for i in mine)
            assert limit.held == total, f"{name}: held {limit.held} != {total}"
        for lease in self.engine.leases.values():
            assert lease.mode == "concurrency"
            assert all(n in self.engine.limits for n in lease.names), "lease on a deleted limit"

    @invariant()
    def no_lease_is_lost(self) -> None:
        """(d) each granted lease is live, or ended by exactly one release/expiry/revocation."""
        for lease_id in self.concurrency_leases:
            live = lease_id in self.engine.leases
            ended = self.endings[lease_id]
            assert ended <= 1, f"lease {lease_id} ended {ended} times"
            assert live != (ended == 1), f"lease {lease_id}: live={live}, endings={ended}"
        assert set(self.engine.leases) <= set(self.concurrency_leases), "lease with no grant"

    @invariant()
    def waiters_stand_in_all_their_queues(self) -> None:
        """(e) and the shadow: queues hold exactly the queued waiters, in arrival order."""
        queues = self.engine.queues
        for waiter in queues.by_request.values():
            assert waiter.names, f"{waiter.request_id} waits on nothing"
            for name in waiter.names:
                assert name in self.engine.limits, f"{waiter.request_id} waits on deleted {name}"
                assert waiter in queues.queue(name), f"{waiter.request_id} missing from {name}"
        for name in self.engine.limits:
            order = [w.request_id for w in queues.queue(name)]
            assert all(rid in queues for rid in order), f"stale waiter in {name}"
            assert order == self.shadow_queues.get(name, []), f"{name} queue out of order"

    @invariant()
    def no_missed_wakeup(self) -> None:
        """(f) no queued waiter fits where it stands, unless decay made the room since the
        engine last looked and a tick is already due to notice it."""
        deadline = self.engine.next_deadline()
        due = deadline is not None and deadline <= self.clock.now()
        for waiter in self.engine.queues.by_request.values():
            if not self._fits(waiter):
                continue
            assert due, f"{waiter.request_id} fits {waiter.names} but is queued, no tick due"
            assert not self._steady(waiter), (
                f"{waiter.request_id} fits {waiter.names}, none of which decay, but is queued"
            )

    def _fits(self, waiter: Waiter) -> bool:
        now = self.clock.now()
        for name in waiter.names:
            limit = self.engine.limits[name]
            if not limit.active:
                continue
            if self.engine.queues.head(name) is not waiter:
                return False
            if limit.occupied(now) + waiter.request.occupy > limit.limit + EPSILON:
                return False
        return True

    def _steady(self, waiter: Waiter) -> bool:
        """Room on limits that do not decay changes only by engine steps, never by time."""
        limits = [self.engine.limits[name] for name in waiter.names]
        return all(limit.slot_decay_per_second == 0 for limit in limits if limit.active)


class SerialIds:
    """Stands in for the `uuid` module inside the engine: lease ids by count, not chance.

    Hypothesis replays a failing run to shrink it; random lease ids would change the order
    in which the engine (and this machine) visit leases, and the replay would diverge.
    """

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return uuid.UUID(int=self.count).hex


SERIAL_IDS = SerialIds()


def _nth(items: list[T], index: int) -> T:
    return items[index % len(items)]


# Shrinking a failing 40-step run takes one to three minutes, so by default a failure is
# reported as found; set GCL_SHRINK=1 to have Hypothesis cut it down to the shortest sequence.
PHASES = tuple(Phase) if os.environ.get("GCL_SHRINK") else tuple(set(Phase) - {Phase.shrink})

EngineMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_engine_state_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Derandomized, so the run is the same each time (a failure reproduces exactly)."""
    monkeypatch.setattr(engine_module, "new_lease_id", SERIAL_IDS)
    EngineMachine.TestCase().runTest()
