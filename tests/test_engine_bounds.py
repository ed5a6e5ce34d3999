"""The engine stays bounded under churn: no table grows with the number of requests served.

Distinct holders, renewals and waiters that come and go must leave nothing behind once their
leases and waits are over (the holder table, the expiry and waiter-deadline heaps).
"""

from __future__ import annotations

import pytest

from gcl.coordinator.engine import COMPACT_SLACK, Engine
from gcl.protocol import AcquireRequest, Holder, LimitCreate
from tests.support.clock import FakeClock

CYCLES = 5_000
DAY = 86_400.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    engine = Engine(clock)
    engine.create_limit(LimitCreate(name="gpu", limit=1))
    return engine


def request(i: int, *, ttl: float = DAY) -> AcquireRequest:
    holder = Holder(worker_id=f"worker-{i}", host=f"host-{i}", pid=i, label=f"job-{i}")
    return AcquireRequest(request_id=f"r{i}", names=["gpu"], lease_ttl=ttl, holder=holder)


def test_distinct_holders_are_forgotten_with_their_leases(engine: Engine) -> None:
    for i in range(CYCLES):
        result = engine.acquire(request(i))
        assert result.lease is not None
        engine.release(result.lease.lease_id)
        engine.take_changes()
    assert len(engine.leases) == 0
    assert len(engine._holders) == 0
    assert len(engine._expiries) <= COMPACT_SLACK  # not one per one-day lease ever granted


def test_a_shared_holder_is_kept_while_any_lease_uses_it(engine: Engine) -> None:
    engine.create_limit(LimitCreate(name="pool", limit=10))
    holder = Holder(worker_id="w", host="h", pid=1)
    leases = []
    for i in range(3):
        ask = AcquireRequest(request_id=f"p{i}", names=["pool"], holder=holder)
        result = engine.acquire(ask)
        assert result.lease is not None
        leases.append(result.lease.lease_id)
    assert engine._holders[holder][1] == 3
    shared = engine.leases[leases[0]].holder
    assert all(engine.leases[i].holder is shared for i in leases)
    for lease_id in leases[:2]:
        engine.release(lease_id)
    assert engine._holders[holder][1] == 1
    engine.release(leases[2])
    assert holder not in engine._holders


def test_renewals_keep_one_expiry_entry_per_lease(engine: Engine, clock: FakeClock) -> None:
    result = engine.acquire(request(1, ttl=30))
    assert result.lease is not None
    lease_id = result.lease.lease_id
    for _ in range(20_000):
        clock.advance(0.5)
        engine.renew(lease_id)
        engine.tick()
    assert len(engine._expiries) == 1
    assert lease_id in engine.leases
    clock.advance(31)
    engine.tick()
    assert lease_id not in engine.leases
    assert engine.take_changes().events[-1].kind == "lease.expired"


def test_waiters_that_come_and_go_leave_no_deadlines(engine: Engine, clock: FakeClock) -> None:
    holder = engine.acquire(request(0))
    assert holder.lease is not None
    for i in range(1, CYCLES):
        assert engine.acquire(request(i)).status == "queued"
        for _ in range(3):
            engine.keepalive(f"r{i}")
        engine.withdraw(f"r{i}", "cancelled")
    assert len(engine.queues) == 0
    assert len(engine._waiter_deadlines) <= COMPACT_SLACK


def test_a_waiter_kept_alive_is_dropped_only_when_it_goes_silent(
    engine: Engine, clock: FakeClock
) -> None:
    engine.acquire(request(0))
    assert engine.acquire(request(1)).status == "queued"
    for _ in range(100):
        clock.advance(2)
        engine.keepalive("r1")
        engine.tick()
    assert "r1" in engine.queues
    assert len(engine._waiter_deadlines) == 1
    clock.advance(6.01)
    engine.tick()
    assert "r1" not in engine.queues
