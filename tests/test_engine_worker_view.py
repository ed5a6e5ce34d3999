"""The worker's view in the state machine: loss notices, `wait.inspect`, long-lived leases.

Driven on a hand-moved clock like tests/test_engine.py; the same facts over a real NATS are in
tests/test_worker_view.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gcl.coordinator import store
from gcl.coordinator.changes import Changes
from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.explain import wait_detail
from gcl.coordinator.limits import Limit
from gcl.protocol import (
    MAX_HOLDINGS_SHOWN,
    MAX_LEASE_TTL,
    AcquireRequest,
    AcquireResult,
    Holder,
    LeaseInfo,
    LimitCreate,
    LostNotice,
)
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"
DAY = 86_400.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(clock, keepalive_seconds=2.0)


def create(engine: Engine, name: str, size: int) -> None:
    engine.create_limit(LimitCreate(name=name, limit=size))
    engine.take_changes()


def ask(engine: Engine, request_id: str, *names: str, **options: Any) -> AcquireResult:
    options.setdefault("holder", Holder(worker_id=f"w-{request_id}", host="node-7", pid=42))
    request = AcquireRequest(
        secret=SECRET, request_id=request_id, names=list(names), notify=f"inbox.{request_id}",
        **options,
    )  # fmt: skip
    return engine.acquire(request)


def lease_of(result: AcquireResult) -> LeaseInfo:
    assert result.status == "granted" and result.lease is not None, result
    return result.lease


def lost_notices(changes: Changes) -> dict[str, LostNotice]:
    found = {}
    for inbox, notice in changes.notices:
        if isinstance(notice, LostNotice):
            assert inbox == f"inbox.{notice.request_id}"  # the acquire's own inbox
            found[notice.lease_id] = notice
    return found


# --- loss pushed to the holder -------------------------------------------------------------


def test_revoke_pushes_a_lost_notice_to_the_holders_inbox(engine: Engine) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu"))
    engine.take_changes()
    engine.revoke(lease.lease_id)
    notice = lost_notices(engine.take_changes())[lease.lease_id]
    assert (notice.kind, notice.reason) == ("lease.revoked", "revoked by an operator")
    assert notice.names == ["gpu"] and notice.request_id == "h"
    assert lease.lease_id in notice.message and "revoked" in notice.message
    assert notice.actor is None  # the service names the operator (tests/test_worker_view.py)


def test_expiry_and_delete_push_too_but_a_release_does_not(
    engine: Engine, clock: FakeClock
) -> None:
    create(engine, "a", 3)
    expiring = lease_of(ask(engine, "e", "a", lease_ttl=5))
    released = lease_of(ask(engine, "r", "a"))
    deleted = lease_of(ask(engine, "d", "a"))
    engine.take_changes()

    engine.release(released.lease_id, SECRET)
    assert lost_notices(engine.take_changes()) == {}
    clock.advance(6)
    engine.tick()
    told = lost_notices(engine.take_changes())
    assert list(told) == [expiring.lease_id]
    assert told[expiring.lease_id].kind == "lease.expired"
    engine.delete_limit("a")
    told = lost_notices(engine.take_changes())
    assert list(told) == [deleted.lease_id]
    assert told[deleted.lease_id].reason == "limit 'a' was deleted"


def test_a_withdraw_that_finds_a_grant_is_not_a_loss(engine: Engine) -> None:
    create(engine, "a", 1)
    ask(engine, "h", "a")
    engine.take_changes()
    engine.withdraw("h", SECRET, "cancelled")
    assert lost_notices(engine.take_changes()) == {}


def test_a_v2_holder_is_not_pushed_a_notice_it_cannot_read(engine: Engine) -> None:
    create(engine, "a", 1)
    lease = lease_of(ask(engine, "old", "a", v=2))
    engine.take_changes()
    engine.revoke(lease.lease_id)
    assert engine.take_changes().notices == []


# --- wait.inspect --------------------------------------------------------------------------


def test_wait_detail_names_place_holders_and_usual_hold(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 2)
    first = lease_of(ask(engine, "old", "gpu"))
    clock.advance(10)
    engine.release(first.lease_id, SECRET)  # one hold of 10 s to judge by
    lease_of(ask(engine, "h1", "gpu", holder=Holder(worker_id="gpu-2", host="node-7", pid=7)))
    clock.advance(5)
    lease_of(ask(engine, "h2", "gpu", holder=Holder(worker_id="gpu-3", label="train")))
    clock.advance(1)
    assert ask(engine, "w1", "gpu").status == "queued"
    assert ask(engine, "w2", "gpu", occupy=2).status == "queued"
    clock.advance(3)

    detail = wait_detail(engine, "w2", SECRET)
    assert (detail.status, detail.occupy, detail.waited_seconds) == ("queued", 2, 3.0)
    (standing,) = detail.standings
    assert (standing.name, standing.position, standing.waiters) == ("gpu", 1, 2)
    assert (standing.limit, standing.occupied, standing.active) == (2, 2.0, True)
    assert standing.avg_hold_seconds == 10.0 and standing.leases == 2
    assert [h.holder.worker_id for h in standing.holders] == ["gpu-2", "gpu-3"]  # oldest first
    assert [h.held_seconds for h in standing.holders] == [9.0, 4.0]


def test_wait_detail_lists_at_most_ten_holders(engine: Engine) -> None:
    create(engine, "big", 25)
    for i in range(25):
        lease_of(ask(engine, f"h{i}", "big"))
    ask(engine, "w", "big")
    (standing,) = wait_detail(engine, "w", SECRET).standings
    assert standing.leases == 25 and len(standing.holders) == MAX_HOLDINGS_SHOWN


def test_wait_detail_is_only_for_its_requester(engine: Engine) -> None:
    create(engine, "a", 1)
    ask(engine, "h", "a")
    ask(engine, "w", "a")
    with pytest.raises(Refusal) as caught:
        wait_detail(engine, "w", "someone-elses-secret")
    assert (caught.value.code, caught.value.field) == ("forbidden", "secret")
    assert wait_detail(engine, "h", SECRET).status == "granted"
    assert wait_detail(engine, "nobody", SECRET).status == "unknown"


def test_the_usual_hold_follows_recent_holds() -> None:
    limit = Limit("a", 1)
    for _ in range(20):
        limit.record_hold(100.0)
    for _ in range(20):
        limit.record_hold(1.0)
    assert limit.typical_hold() < 3.0  # the recent mean has moved on...
    assert limit.hold_seconds_total / limit.hold_count == pytest.approx(50.5)  # ...the mean not
    limit.record_hold(1e6, recent=False)  # a script's long lease does not skew it
    assert limit.typical_hold() < 3.0


# --- long-lived leases ---------------------------------------------------------------------


def test_a_ttl_above_a_day_must_be_asked_for_as_long_lived() -> None:
    with pytest.raises(ValidationError, match="long_lived: true") as caught:
        AcquireRequest(request_id="r", secret=SECRET, names=["a"], lease_ttl=DAY + 1)
    assert caught.value.errors()[0]["loc"] == ("lease_ttl",)
    year = AcquireRequest(
        request_id="r", secret=SECRET, names=["a"], lease_ttl=365 * DAY, long_lived=True
    )
    assert year.lease_ttl == 365 * DAY
    assert AcquireRequest(request_id="r", secret=SECRET, names=["a"], lease_ttl=MAX_LEASE_TTL)


def test_a_long_lived_lease_is_marked_and_not_renewed(engine: Engine) -> None:
    create(engine, "db", 1)
    lease = lease_of(ask(engine, "script", "db", lease_ttl=30 * DAY, long_lived=True))
    assert lease.long_lived and lease.ttl == 30 * DAY
    events = engine.take_changes().events
    assert [e.long_lived for e in events if e.kind == "lease.granted"] == [True]
    assert "long_lived" in lease.model_dump_json()
    with pytest.raises(Refusal, match="long-lived"):
        engine.renew(lease.lease_id, SECRET)
    engine.revoke(lease.lease_id)  # revocable like any lease
    assert lease.lease_id not in engine.leases


def test_restore_keeps_what_remains_of_a_long_lived_lease(clock: FakeClock) -> None:
    engine = Engine(clock)
    saved = Changes()
    engine.create_limit(LimitCreate(name="db", limit=2))
    script = lease_of(ask(engine, "script", "db", lease_ttl=7 * DAY, long_lived=True))
    worker = lease_of(ask(engine, "worker", "db", lease_ttl=60))
    saved.merge(engine.take_changes())

    clock.advance(2 * DAY)  # down for two days, say
    restored = _restore(clock, saved)
    kept = {lease.lease_id: lease for lease in restored.list_leases()}
    assert kept[script.lease_id].long_lived and kept[script.lease_id].ttl == 7 * DAY
    assert kept[script.lease_id].expires_in == pytest.approx(5 * DAY)  # not a fresh week
    assert kept[worker.lease_id].expires_in == 60  # renewed leases: a fresh ttl, as before
    assert restored.leases[script.lease_id].notify == "inbox.script"

    clock.advance(5 * DAY + 1)
    restored.tick()
    assert script.lease_id not in restored.leases


def test_a_v2_reply_has_no_field_a_v2_client_does_not_know(engine: Engine) -> None:
    create(engine, "a", 1)
    lease = lease_of(ask(engine, "r", "a", v=2))
    assert "long_lived" not in lease.model_dump_json()


def _restore(clock: FakeClock, saved: Changes) -> Engine:
    engine = Engine(clock)
    rows = [store.limit_row(limit) for limit in saved.limits.values() if limit is not None]
    leases = [store.lease_row(lease) for lease in saved.leases_added.values()]
    engine.restore([store._limit(row) for row in rows], [store._lease(row, {}) for row in leases])
    return engine
