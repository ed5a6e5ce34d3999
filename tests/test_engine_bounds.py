"""The engine stays bounded under churn: no table grows with the number of requests served.

Distinct holders, renewals and waiters that come and go must leave nothing behind once their
leases and waits are over (the holder table, the expiry and waiter-deadline heaps).
"""

from __future__ import annotations

from typing import Any

import pytest

from gcl.coordinator.bounds import Bounds
from gcl.coordinator.engine import COMPACT_SLACK, Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.limits import Limit
from gcl.protocol import AcquireRequest, Holder, LimitCreate, LimitUpdate
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"  # every request here is made with it

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
    return AcquireRequest(
        secret=SECRET, request_id=f"r{i}", names=["gpu"], lease_ttl=ttl, holder=holder
    )


def test_distinct_holders_are_forgotten_with_their_leases(engine: Engine) -> None:
    for i in range(CYCLES):
        result = engine.acquire(request(i))
        assert result.lease is not None
        engine.release(result.lease.lease_id, SECRET)
        engine.take_changes()
    assert len(engine.leases) == 0
    assert len(engine._holders) == 0
    assert len(engine._expiries) <= COMPACT_SLACK  # not one per one-day lease ever granted


def test_a_shared_holder_is_kept_while_any_lease_uses_it(engine: Engine) -> None:
    engine.create_limit(LimitCreate(name="pool", limit=10))
    holder = Holder(worker_id="w", host="h", pid=1)
    leases = []
    for i in range(3):
        ask = AcquireRequest(secret=SECRET, request_id=f"p{i}", names=["pool"], holder=holder)
        result = engine.acquire(ask)
        assert result.lease is not None
        leases.append(result.lease.lease_id)
    assert engine._holders[holder][1] == 3
    shared = engine.leases[leases[0]].holder
    assert all(engine.leases[i].holder is shared for i in leases)
    for lease_id in leases[:2]:
        engine.release(lease_id, SECRET)
    assert engine._holders[holder][1] == 1
    engine.release(leases[2], SECRET)
    assert holder not in engine._holders


def test_renewals_keep_one_expiry_entry_per_lease(engine: Engine, clock: FakeClock) -> None:
    result = engine.acquire(request(1, ttl=30))
    assert result.lease is not None
    lease_id = result.lease.lease_id
    for _ in range(20_000):
        clock.advance(0.5)
        engine.renew(lease_id, SECRET)
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
            engine.keepalive(f"r{i}", SECRET)
        engine.withdraw(f"r{i}", SECRET, "cancelled")
    assert len(engine.queues) == 0
    assert len(engine._waiter_deadlines) <= COMPACT_SLACK


def test_a_waiter_kept_alive_is_dropped_only_when_it_goes_silent(
    engine: Engine, clock: FakeClock
) -> None:
    engine.acquire(request(0))
    assert engine.acquire(request(1)).status == "queued"
    for _ in range(100):
        clock.advance(2)
        engine.keepalive("r1", SECRET)
        engine.tick()
    assert "r1" in engine.queues
    assert len(engine._waiter_deadlines) == 1
    clock.advance(6.01)
    engine.tick()
    assert "r1" not in engine.queues


# --- caps -----------------------------------------------------------------------------------


def capped(clock: FakeClock, **caps: int) -> Engine:
    return Engine(clock, bounds=Bounds(**caps))


def over(call: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args)
    assert caught.value.code == "over_capacity", caught.value
    return caught.value


def test_waiters_per_limit_are_capped(clock: FakeClock) -> None:
    engine = capped(clock, max_waiters_per_limit=3)
    engine.create_limit(LimitCreate(name="gpu", limit=1))
    engine.acquire(request(0))
    for i in range(1, 4):
        assert engine.acquire(request(i)).status == "queued"
    refusal = over(engine.acquire, request(4))
    assert refusal.field == "names"
    for part in ("'gpu'", "3", "max_waiters_per_limit", "GCL_MAX_WAITERS_PER_LIMIT"):
        assert part in refusal.message
    engine.withdraw("r2", SECRET, "cancelled")
    assert engine.acquire(request(4)).status == "queued"


def test_waiters_per_holder_are_capped_across_limits(clock: FakeClock) -> None:
    engine = capped(clock, max_waiters_per_holder=2)
    holder = Holder(worker_id="w", host="h", pid=7, label="one")
    for name in ("a", "b", "c"):
        engine.create_limit(LimitCreate(name=name, limit=1))
        engine.acquire(AcquireRequest(secret=SECRET, request_id=f"hold-{name}", names=[name]))
    for i, name in enumerate(("a", "b")):
        ask = AcquireRequest(secret=SECRET, request_id=f"q{i}", names=[name], holder=holder)
        assert engine.acquire(ask).status == "queued"
    relabelled = holder.model_copy(update={"label": "another label, same process"})
    refusal = over(
        engine.acquire,
        AcquireRequest(secret=SECRET, request_id="q3", names=["c"], holder=relabelled),
    )
    assert refusal.field == "holder" and "GCL_MAX_WAITERS_PER_HOLDER" in refusal.message
    other = AcquireRequest(
        secret=SECRET, request_id="q4", names=["c"], holder=Holder(worker_id="w", pid=8)
    )
    assert engine.acquire(other).status == "queued"
    engine.release(engine.lease_by_request["hold-a"], SECRET)  # q0 is admitted: one waiter fewer
    assert engine.acquire(
        AcquireRequest(secret=SECRET, request_id="q5", names=["c"], holder=holder)
    ).status == ("queued")
    assert engine._waiting_holders[("w", "h", 7)] == 2


def test_all_waiters_are_capped(clock: FakeClock) -> None:
    engine = capped(clock, max_waiters=2)
    engine.create_limit(LimitCreate(name="gpu", limit=1))
    engine.acquire(request(0))
    engine.acquire(request(1))
    engine.acquire(request(2))
    assert "GCL_MAX_WAITERS" in over(engine.acquire, request(3)).message


def test_leases_per_limit_are_capped_on_inactive_limits_too(clock: FakeClock) -> None:
    engine = capped(clock, max_leases_per_limit=3)
    engine.create_limit(LimitCreate(name="dry", limit=1, active=False))
    for i in range(3):
        assert engine.acquire(request(i).model_copy(update={"names": ["dry"]})).lease
    refusal = over(engine.acquire, request(3).model_copy(update={"names": ["dry"]}))
    assert "'dry'" in refusal.message and "GCL_MAX_LEASES_PER_LIMIT" in refusal.message
    engine.update_limit(LimitUpdate(name="dry", slot_decay_per_second=1.0))
    rate = AcquireRequest(secret=SECRET, request_id="rate", names=["dry"], mode="rate")
    assert engine.acquire(rate).status == "granted"  # rate grants hold no lease


def test_a_waiter_at_the_lease_cap_waits_for_a_lease_to_end(clock: FakeClock) -> None:
    engine = capped(clock, max_leases_per_limit=2)
    engine.create_limit(LimitCreate(name="pool", limit=10, slot_decay_per_second=1.0))
    engine.create_limit(LimitCreate(name="one", limit=1))
    first = engine.acquire(AcquireRequest(secret=SECRET, request_id="p0", names=["pool"]))
    engine.acquire(AcquireRequest(secret=SECRET, request_id="p1", names=["pool"]))
    engine.acquire(AcquireRequest(secret=SECRET, request_id="o", names=["one"]))
    both = AcquireRequest(secret=SECRET, request_id="both", names=["pool", "one"])
    assert engine.acquire(both).status == "queued"
    engine.release(
        engine.lease_by_request["o"], SECRET
    )  # room on `one`; `pool` is at its lease cap
    assert "both" in engine.queues
    deadline = engine.next_deadline()
    assert deadline is None or deadline > clock.now()  # no busy timer on a lease cap
    assert first.lease is not None
    engine.release(first.lease.lease_id, SECRET)
    assert "both" in engine.lease_by_request


def test_all_leases_are_capped(clock: FakeClock) -> None:
    engine = capped(clock, max_leases=2)
    engine.create_limit(LimitCreate(name="gpu", limit=10))
    engine.create_limit(LimitCreate(name="db", limit=10))
    engine.acquire(request(0).model_copy(update={"names": ["gpu"]}))
    engine.acquire(request(1).model_copy(update={"names": ["db"]}))
    message = over(engine.acquire, request(2)).message
    assert "(max_leases)" in message and "GCL_MAX_LEASES on" in message


def test_limits_are_capped(clock: FakeClock) -> None:
    engine = capped(clock, max_limits=2)
    engine.create_limit(LimitCreate(name="a", limit=1))
    engine.create_limit(LimitCreate(name="t:{worker_id}", limit=1))
    refusal = over(engine.create_limit, LimitCreate(name="c", limit=1))
    assert refusal.field == "name" and "GCL_MAX_LIMITS" in refusal.message
    refusal = over(engine.acquire, AcquireRequest(secret=SECRET, request_id="x", names=["t:w1"]))
    assert refusal.field == "names"
    engine.delete_limit("a")
    assert engine.acquire(AcquireRequest(secret=SECRET, request_id="x", names=["t:w1"])).lease


def test_template_instances_are_capped_and_counted_again_after_restore(
    clock: FakeClock,
) -> None:
    engine = capped(clock, max_instances_per_template=2)
    engine.create_limit(LimitCreate(name="gpu:{worker_id}", limit=1))
    for worker in ("w1", "w2"):
        assert engine.acquire(
            AcquireRequest(secret=SECRET, request_id=worker, names=[f"gpu:{worker}"])
        ).lease
    refusal = over(engine.acquire, AcquireRequest(secret=SECRET, request_id="w3", names=["gpu:w3"]))
    assert "'gpu:{worker_id}'" in refusal.message
    assert "GCL_MAX_INSTANCES_PER_TEMPLATE" in refusal.message
    engine.delete_limit("gpu:w1")
    assert engine.acquire(AcquireRequest(secret=SECRET, request_id="w3", names=["gpu:w3"])).lease

    restored = capped(clock, max_instances_per_template=2)
    restored.restore([store_copy(limit) for limit in engine.limits.values()], [])
    refusal = over(
        restored.acquire, AcquireRequest(secret=SECRET, request_id="w4", names=["gpu:w4"])
    )
    assert refusal.code == "over_capacity"


def store_copy(limit: Limit) -> Limit:
    """The limit as the store loads it: without what lives only in memory."""
    copy = limit.snapshot()
    copy.template = None
    return copy
