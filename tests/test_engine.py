"""The coordinator's state machine, one rule at a time, on a hand-moved clock (no I/O).

Each test drives `Engine` directly and reads what a step changed with `take_changes()`, so a
broken rule shows up here with a readable sequence instead of as a flaky network test.
"""

from __future__ import annotations

from typing import Any

import pytest

from gcl.coordinator import store
from gcl.coordinator.changes import Changes
from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.protocol import (
    AcquireRequest,
    AcquireResult,
    LeaseInfo,
    LimitCreate,
    LimitUpdate,
    WaitNotice,
)
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"  # every request in these tests is made with it

KEEPALIVE = 2.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(clock, keepalive_seconds=KEEPALIVE)


def create(engine: Engine, name: str, size: int, **settings: Any) -> None:
    engine.create_limit(LimitCreate(name=name, limit=size, **settings))
    engine.take_changes()


def update(engine: Engine, name: str, **settings: Any) -> Changes:
    engine.update_limit(LimitUpdate(name=name, **settings))
    return engine.take_changes()


def ask(engine: Engine, request_id: str, *names: str, **options: Any) -> AcquireResult:
    """Acquire with a notify inbox named after the request, so notices are easy to find."""
    request = AcquireRequest(
        secret=SECRET,
        request_id=request_id,
        names=list(names),
        notify=f"inbox.{request_id}",
        **options,
    )
    return engine.acquire(request)


def lease_of(result: AcquireResult) -> LeaseInfo:
    assert result.status == "granted", result
    assert result.lease is not None
    return result.lease


def kinds(changes: Changes) -> list[str]:
    return [event.kind for event in changes.events]


def notices(changes: Changes) -> dict[str, WaitNotice]:
    """Notices by request id; also checks each went to that request's own inbox."""
    found = {}
    for inbox, notice in changes.notices:
        assert inbox == f"inbox.{notice.request_id}"
        found[notice.request_id] = notice
    return found


def granted_ids(changes: Changes) -> list[str]:
    """Request ids granted in this step, in grant order."""
    return [e.request_id or "" for e in changes.events if e.kind == "lease.granted"]


def queue(engine: Engine, name: str) -> list[str]:
    return [waiter.request_id for waiter in engine.queues.queue(name)]


def refusal(call: Any, *args: Any, **kwargs: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args, **kwargs)
    return caught.value


# --- queueing order ----------------------------------------------------------------------


def test_waiters_are_granted_in_arrival_order(engine: Engine) -> None:
    create(engine, "gpu", 1)
    holder = lease_of(ask(engine, "h", "gpu"))
    for rid in ("w1", "w2", "w3"):
        assert ask(engine, rid, "gpu").status == "queued"
    assert queue(engine, "gpu") == ["w1", "w2", "w3"]
    engine.take_changes()

    current = holder.lease_id
    for rid in ("w1", "w2", "w3"):
        engine.release(current, SECRET)
        changes = engine.take_changes()
        assert granted_ids(changes) == [rid]
        notice = notices(changes)[rid]
        assert notice.status == "granted" and notice.lease is not None
        current = notice.lease.lease_id
    assert queue(engine, "gpu") == []


def test_queued_position_is_reported(engine: Engine) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu")
    ask(engine, "w1", "gpu")
    result = ask(engine, "w2", "gpu")
    assert result.positions == {"gpu": 1}
    assert result.keepalive_seconds == KEEPALIVE


def test_large_request_is_not_starved_by_later_small_ones(engine: Engine) -> None:
    create(engine, "db", 3)
    holder = lease_of(ask(engine, "h", "db"))
    assert ask(engine, "big", "db", occupy=3).status == "queued"
    # Two slots are free, but a newcomer may not jump the queue past the 3-slot waiter.
    assert ask(engine, "small1", "db").status == "queued"
    assert ask(engine, "small2", "db").status == "queued"
    assert engine.limits["db"].held == 1
    engine.take_changes()

    engine.release(holder.lease_id, SECRET)
    changes = engine.take_changes()
    assert granted_ids(changes) == ["big"]
    assert engine.limits["db"].held == 3
    assert queue(engine, "db") == ["small1", "small2"]


def test_multi_name_acquire_takes_nothing_until_all_fit(engine: Engine) -> None:
    create(engine, "a", 1)
    create(engine, "b", 1)
    holder = lease_of(ask(engine, "h", "a"))
    assert ask(engine, "both", "a", "b").status == "queued"
    assert engine.limits["b"].held == 0
    assert queue(engine, "b") == ["both"]
    engine.take_changes()

    engine.release(holder.lease_id, SECRET)
    changes = engine.take_changes()
    lease = notices(changes)["both"].lease
    assert lease is not None and sorted(lease.names) == ["a", "b"]
    assert engine.limits["a"].held == 1 and engine.limits["b"].held == 1


def test_crossed_name_orders_never_deadlock(engine: Engine) -> None:
    create(engine, "a", 1)
    create(engine, "b", 1)
    holder = lease_of(ask(engine, "h", "a", "b"))
    assert ask(engine, "ab", "a", "b").status == "queued"
    assert ask(engine, "ba", "b", "a").status == "queued"
    assert queue(engine, "a") == ["ab", "ba"]
    assert queue(engine, "b") == ["ab", "ba"]
    engine.take_changes()

    engine.release(holder.lease_id, SECRET)
    first = notices(engine.take_changes())["ab"].lease
    assert first is not None
    engine.release(first.lease_id, SECRET)
    second = notices(engine.take_changes())["ba"].lease
    assert second is not None and sorted(second.names) == ["a", "b"]
    assert len(engine.queues) == 0


# --- refusals ----------------------------------------------------------------------------


def test_occupy_above_an_active_limit_is_refused(engine: Engine) -> None:
    create(engine, "db", 2)
    caught = refusal(ask, engine, "r", "db", occupy=3)
    assert caught.code == "invalid_request"
    assert caught.field == "occupy"
    assert len(engine.queues) == 0 and engine.limits["db"].held == 0


def test_occupy_above_an_inactive_limit_is_allowed(engine: Engine) -> None:
    create(engine, "db", 2, active=False)
    assert lease_of(ask(engine, "r", "db", occupy=3)).occupy == 3
    assert engine.limits["db"].held == 3


def test_rate_mode_needs_decay(engine: Engine) -> None:
    create(engine, "api", 5)
    caught = refusal(ask, engine, "r", "api", mode="rate")
    assert caught.code == "invalid_request"
    assert caught.field == "slot_decay_per_second"


def test_wait_false_on_a_full_limit_is_a_timeout_refusal(engine: Engine) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu")
    engine.take_changes()
    caught = refusal(ask, engine, "r", "gpu", wait=False)
    assert caught.code == "timeout"
    assert len(engine.queues) == 0
    assert engine.limits["gpu"].denied == 1
    assert kinds(engine.take_changes()) == ["waiter.rejected"]


def test_wait_false_on_a_free_limit_is_granted(engine: Engine) -> None:
    create(engine, "gpu", 1)
    assert ask(engine, "r", "gpu", wait=False).status == "granted"


# --- inactive (dry-run) limits -----------------------------------------------------------


def test_inactive_limit_never_blocks_but_records(engine: Engine) -> None:
    create(engine, "gpu", 1, active=False)
    results = [ask(engine, f"r{i}", "gpu", wait=False) for i in range(3)]
    assert [r.status for r in results] == ["granted"] * 3
    limit = engine.limits["gpu"]
    assert limit.held == 3
    assert limit.lease_ids == {lease_of(r).lease_id for r in results}
    assert limit.denied == 2  # the second and third would have waited
    assert engine.limit_info("gpu").occupied == 3


# --- missing names -----------------------------------------------------------------------


def test_missing_names_are_skipped_when_not_strict(engine: Engine) -> None:
    create(engine, "a", 1)
    result = ask(engine, "r", "a", "ghost")
    assert result.missing == ["ghost"]
    assert lease_of(result).names == ["a"]


def test_only_missing_names_grant_without_a_lease(engine: Engine) -> None:
    result = ask(engine, "r", "ghost")
    assert result.status == "granted"
    assert result.lease is None
    assert result.missing == ["ghost"]
    assert engine.leases == {}


def test_missing_names_are_refused_when_strict(engine: Engine) -> None:
    create(engine, "a", 1)
    caught = refusal(ask, engine, "r", "a", "ghost", strict=True)
    assert caught.code == "limit_not_found"
    assert "ghost" in caught.message
    assert engine.limits["a"].held == 0


# --- waiting: keepalive and withdrawal ---------------------------------------------------


def test_keepalive_keeps_a_waiter_beyond_its_deadline(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu", lease_ttl=3600)
    ask(engine, "w", "gpu")
    for _ in range(5):
        clock.advance(KEEPALIVE * 2.5)
        assert engine.keepalive("w", SECRET).status == "queued"
        engine.tick()
    assert queue(engine, "gpu") == ["w"]
    assert "waiter.timed_out" not in kinds(engine.take_changes())


def test_silent_waiter_is_dropped_and_the_next_admitted(engine: Engine, clock: FakeClock) -> None:
    create(engine, "db", 2)
    ask(engine, "h", "db", lease_ttl=3600)
    assert ask(engine, "silent", "db", occupy=2).status == "queued"
    assert ask(engine, "alive", "db").status == "queued"  # behind the head, despite room
    engine.take_changes()

    clock.advance(KEEPALIVE * 2)
    engine.keepalive("alive", SECRET)
    engine.tick()
    assert queue(engine, "db") == ["silent", "alive"]  # deadline not reached yet

    clock.advance(KEEPALIVE * 1.01)
    engine.tick()
    changes = engine.take_changes()
    dropped = [e for e in changes.events if e.kind == "waiter.timed_out"]
    assert [e.request_id for e in dropped] == ["silent"]
    assert granted_ids(changes) == ["alive"]
    assert queue(engine, "db") == []


def test_next_deadline_reports_the_waiter_deadline(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu", lease_ttl=3600)
    ask(engine, "w", "gpu")
    assert engine.next_deadline() == pytest.approx(clock.now() + 3 * KEEPALIVE)


def test_withdraw_a_queued_waiter(engine: Engine) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu")
    ask(engine, "w", "gpu")
    engine.take_changes()
    assert engine.withdraw("w", SECRET, "cancelled").status == "withdrawn"
    assert kinds(engine.take_changes()) == ["waiter.withdrawn"]
    assert len(engine.queues) == 0
    assert engine.keepalive("w", SECRET).status == "unknown"


def test_withdraw_for_timeout_is_reported_as_timed_out(engine: Engine) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu")
    ask(engine, "w", "gpu")
    engine.take_changes()
    assert engine.withdraw("w", SECRET, "timeout").status == "withdrawn"
    assert kinds(engine.take_changes()) == ["waiter.timed_out"]


def test_withdraw_after_a_raced_grant_gives_the_slots_back(engine: Engine) -> None:
    create(engine, "gpu", 1)
    holder = lease_of(ask(engine, "h", "gpu"))
    ask(engine, "w", "gpu")
    engine.release(holder.lease_id, SECRET)
    assert engine.keepalive("w", SECRET).status == "granted"  # the notice may have been lost
    engine.take_changes()

    assert engine.withdraw("w", SECRET, "cancelled").status == "released"
    assert kinds(engine.take_changes()) == ["lease.released"]
    assert engine.limits["gpu"].held == 0
    assert engine.withdraw("w", SECRET, "cancelled").status == "unknown"


# --- holding: expiry, renewal, release, revocation ---------------------------------------


def test_lease_expires_at_tick_and_admits_the_next(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu", lease_ttl=5))
    ask(engine, "w", "gpu")
    assert engine.next_deadline() == pytest.approx(clock.now() + 5)
    engine.take_changes()

    clock.advance(4.9)
    engine.keepalive("w", SECRET)
    engine.tick()
    assert lease.lease_id in engine.leases
    clock.advance(0.2)
    engine.tick()
    changes = engine.take_changes()
    assert kinds(changes)[:2] == ["lease.expired", "lease.granted"]
    assert changes.events[0].lease_id == lease.lease_id
    assert lease.lease_id not in engine.leases
    assert granted_ids(changes) == ["w"]


def test_renew_extends_the_lease(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu", lease_ttl=5))
    clock.advance(4)
    assert engine.renew(lease.lease_id, SECRET).expires_in == 5
    clock.advance(4)
    engine.tick()
    assert lease.lease_id in engine.leases
    assert engine.list_leases("gpu")[0].expires_in == pytest.approx(1)
    clock.advance(1.1)
    engine.tick()
    assert lease.lease_id not in engine.leases
    assert refusal(engine.renew, lease.lease_id, SECRET).code == "lease_lost"


def test_release_of_an_expired_lease_is_lease_lost(engine: Engine, clock: FakeClock) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu", lease_ttl=1))
    clock.advance(2)
    engine.tick()
    caught = refusal(engine.release, lease.lease_id, SECRET)
    assert caught.code == "lease_lost"
    assert "expired" in caught.message


def test_second_release_reports_not_released(engine: Engine) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu"))
    assert engine.release(lease.lease_id, SECRET).released is True
    engine.take_changes()
    assert engine.release(lease.lease_id, SECRET).released is False
    assert kinds(engine.take_changes()) == []
    assert engine.limits["gpu"].held == 0


def test_release_of_an_unknown_lease_is_not_found(engine: Engine) -> None:
    assert refusal(engine.release, "nope", SECRET).code == "lease_not_found"
    assert refusal(engine.renew, "nope", SECRET).code == "lease_not_found"


def test_revoke_ends_the_lease_and_admits_the_next(engine: Engine) -> None:
    create(engine, "gpu", 1)
    lease = lease_of(ask(engine, "h", "gpu"))
    ask(engine, "w", "gpu")
    engine.take_changes()
    engine.revoke(lease.lease_id)
    changes = engine.take_changes()
    assert kinds(changes)[:2] == ["lease.revoked", "lease.granted"]
    assert granted_ids(changes) == ["w"]
    assert refusal(engine.release, lease.lease_id, SECRET).code == "lease_lost"
    assert refusal(engine.revoke, lease.lease_id).code == "lease_not_found"


# --- changing limits ---------------------------------------------------------------------


def test_lowering_below_held_keeps_holders_and_new_grants_wait(engine: Engine) -> None:
    create(engine, "db", 3)
    leases = [lease_of(ask(engine, f"h{i}", "db")) for i in range(3)]
    update(engine, "db", limit=1)
    assert engine.limits["db"].held == 3
    assert all(lease.lease_id in engine.leases for lease in leases)
    assert ask(engine, "w", "db").status == "queued"

    for lease in leases[:2]:
        engine.release(lease.lease_id, SECRET)
        assert queue(engine, "db") == ["w"], "granted while the limit was still over-held"
    engine.take_changes()
    engine.release(leases[2].lease_id, SECRET)
    assert granted_ids(engine.take_changes()) == ["w"]


def test_lowering_below_a_waiters_occupy_rejects_it(engine: Engine) -> None:
    create(engine, "db", 3)
    ask(engine, "h", "db", occupy=3)
    ask(engine, "w", "db", occupy=3)
    changes = update(engine, "db", limit=2)
    assert "waiter.rejected" in kinds(changes)
    notice = notices(changes)["w"]
    assert notice.status == "failed"
    assert notice.error_code == "invalid_request"
    assert len(engine.queues) == 0


def test_removing_decay_rejects_queued_rate_waiters(engine: Engine) -> None:
    create(engine, "api", 1, slot_decay_per_second=1)
    ask(engine, "r1", "api", mode="rate")
    assert ask(engine, "r2", "api", mode="rate").status == "queued"
    changes = update(engine, "api", slot_decay_per_second=0)
    assert notices(changes)["r2"].status == "failed"
    assert len(engine.queues) == 0


def test_deactivating_admits_the_queue_and_reactivating_stays_truthful(engine: Engine) -> None:
    create(engine, "gpu", 1)
    holder = lease_of(ask(engine, "h", "gpu"))
    ask(engine, "w1", "gpu")
    ask(engine, "w2", "gpu")
    engine.take_changes()

    changes = update(engine, "gpu", active=False)
    assert granted_ids(changes) == ["w1", "w2"]
    assert engine.limit_info("gpu").occupied == 3

    update(engine, "gpu", active=True)
    info = engine.limit_info("gpu")
    assert (info.held, info.leases, info.occupied, info.limit) == (3, 3, 3, 1)
    assert ask(engine, "w3", "gpu").status == "queued"
    engine.release(holder.lease_id, SECRET)
    assert queue(engine, "gpu") == ["w3"]


def test_delete_revokes_holders_and_frees_their_other_limits(engine: Engine) -> None:
    create(engine, "a", 5)
    create(engine, "b", 1)
    lease = lease_of(ask(engine, "h", "a", "b"))
    ask(engine, "w", "b")
    engine.take_changes()

    assert engine.delete_limit("a") == 1
    changes = engine.take_changes()
    revoked = [e for e in changes.events if e.kind == "lease.revoked"]
    assert [e.lease_id for e in revoked] == [lease.lease_id]
    assert granted_ids(changes) == ["w"]
    assert changes.limits["a"] is None
    assert "a" not in engine.limits
    assert engine.limits["b"].held == 1


def test_delete_turns_a_waiters_name_into_a_missing_one(engine: Engine) -> None:
    create(engine, "a", 1)
    create(engine, "b", 1)
    ask(engine, "h", "a")
    ask(engine, "w", "a", "b")
    engine.take_changes()
    engine.delete_limit("a")
    notice = notices(engine.take_changes())["w"]
    assert notice.missing == ["a"]
    assert notice.lease is not None and notice.lease.names == ["b"]


def test_create_twice_is_refused(engine: Engine) -> None:
    create(engine, "a", 1)
    assert refusal(create, engine, "a", 2).code == "limit_exists"
    assert refusal(update, engine, "nope").code == "limit_not_found"
    assert refusal(engine.delete_limit, "nope").code == "limit_not_found"


# --- rate limits -------------------------------------------------------------------------


def test_rate_grant_is_due_exactly_when_decay_makes_room(engine: Engine, clock: FakeClock) -> None:
    create(engine, "api", 1, slot_decay_per_second=10)
    start = clock.now()
    assert ask(engine, "r1", "api", mode="rate").status == "granted"
    assert engine.leases == {}  # a rate grant is spent, not held
    assert refusal(ask, engine, "r2", "api", mode="rate", wait=False).code == "timeout"
    assert ask(engine, "r3", "api", mode="rate").status == "queued"
    assert engine.next_deadline() == pytest.approx(start + 0.1)
    engine.take_changes()

    clock.advance(0.05)
    engine.tick()
    assert queue(engine, "api") == ["r3"]
    clock.advance(0.05)
    engine.tick()
    assert granted_ids(engine.take_changes()) == ["r3"]
    assert len(engine.queues) == 0


# --- idempotency, fencing, restore -------------------------------------------------------


def test_resent_acquire_returns_the_same_lease(engine: Engine) -> None:
    create(engine, "gpu", 2)
    first = lease_of(ask(engine, "r", "gpu"))
    again = lease_of(ask(engine, "r", "gpu"))
    assert again.lease_id == first.lease_id
    assert engine.limits["gpu"].held == 1


def test_resent_queued_acquire_stays_one_waiter(engine: Engine) -> None:
    create(engine, "gpu", 1)
    ask(engine, "h", "gpu")
    ask(engine, "w", "gpu")
    again = ask(engine, "w", "gpu")
    assert again.status == "queued"
    assert again.positions == {"gpu": 0}
    assert queue(engine, "gpu") == ["w"]


def test_resent_rate_acquire_is_not_charged_twice(engine: Engine) -> None:
    create(engine, "api", 2, slot_decay_per_second=1)
    first = lease_of(ask(engine, "r", "api", mode="rate"))
    again = lease_of(ask(engine, "r", "api", mode="rate"))
    assert again.lease_id == first.lease_id
    assert engine.limit_info("api").occupied == 1


def test_fencing_tokens_grow_per_limit(engine: Engine) -> None:
    create(engine, "a", 10)
    create(engine, "b", 10)
    tokens = [lease_of(ask(engine, f"r{i}", "a")).fencing_tokens["a"] for i in range(3)]
    assert tokens[1] == tokens[0] + 1 and tokens[2] == tokens[1] + 1
    both = lease_of(ask(engine, "ab", "a", "b")).fencing_tokens
    assert both["a"] == tokens[2] + 1
    first_b = lease_of(ask(engine, "b2", "b")).fencing_tokens["b"]
    assert first_b == both["b"] + 1  # b counts its own grants only


def test_fencing_tokens_keep_growing_across_delete_and_create(
    engine: Engine, clock: FakeClock
) -> None:
    """A holder of the deleted limit may still write: the new limit must out-token it."""
    create(engine, "a", 10)
    old = max(lease_of(ask(engine, f"r{i}", "a")).fencing_tokens["a"] for i in range(5))
    engine.delete_limit("a")
    clock.advance(1)
    create(engine, "a", 10)
    assert lease_of(ask(engine, "new", "a")).fencing_tokens["a"] > old


def test_fencing_tokens_and_leases_survive_restore(clock: FakeClock) -> None:
    engine = Engine(clock)
    saved = Changes()
    for name in ("a", "b"):
        engine.create_limit(LimitCreate(name=name, limit=2))
        saved.merge(engine.take_changes())
    kept = lease_of(ask(engine, "keep", "a", "b"))
    saved.merge(engine.take_changes())
    gone = lease_of(ask(engine, "gone", "a"))
    engine.release(gone.lease_id, SECRET)
    saved.merge(engine.take_changes())
    assert list(saved.leases_added) == [kept.lease_id]

    clock.advance(100)
    restored = _restore(clock, saved)
    assert restored.limits["a"].held == 1 and restored.limits["b"].held == 1
    assert restored.renew(kept.lease_id, SECRET).expires_in == kept.ttl
    fresh = lease_of(ask(restored, "new", "a", "b")).fencing_tokens
    assert fresh == {"a": gone.fencing_tokens["a"] + 1, "b": kept.fencing_tokens["b"] + 1}
    restored.release(kept.lease_id, SECRET)
    assert restored.limits["a"].held == 1


def test_restore_drops_a_lease_whose_limit_is_gone(clock: FakeClock) -> None:
    engine = Engine(clock)
    saved = Changes()
    for name in ("a", "b"):
        engine.create_limit(LimitCreate(name=name, limit=2))
    kept = lease_of(ask(engine, "keep", "a", "b"))
    saved.merge(engine.take_changes())
    del saved.limits["b"]  # as if the row was deleted by hand

    restored = _restore(clock, saved)
    assert kept.lease_id not in restored.leases
    assert restored.limits["a"].held == 0
    assert restored.take_changes().leases_removed == {kept.lease_id}


def _restore(clock: FakeClock, saved: Changes) -> Engine:
    """A fresh engine loaded the way the service loads it: rows -> objects via the store."""
    engine = Engine(clock)
    rows = [store.limit_row(limit) for limit in saved.limits.values() if limit is not None]
    leases = [store.lease_row(lease) for lease in saved.leases_added.values()]
    engine.restore([store._limit(row) for row in rows], [store._lease(row, {}) for row in leases])
    return engine


# --- templates ---------------------------------------------------------------------------


def test_template_creates_one_limit_per_worker(engine: Engine) -> None:
    create(engine, "gpu:{worker_id}", 2)
    first = lease_of(ask(engine, "r1", "gpu:w1"))
    changes = engine.take_changes()
    created = [e for e in changes.events if e.kind == "limit.created"]
    assert [e.names for e in created] == [["gpu:w1"]]
    assert engine.limit_info("gpu:w1").limit == 2
    assert first.names == ["gpu:w1"]

    ask(engine, "r2", "gpu:w1")
    assert ask(engine, "r3", "gpu:w1").status == "queued"
    assert ask(engine, "r4", "gpu:w2").status == "granted"
    assert engine.limits["gpu:w2"].held == 1
    assert engine.limits["gpu:{worker_id}"].held == 0


def test_template_itself_is_not_acquirable(engine: Engine) -> None:
    create(engine, "gpu:{worker_id}", 1)
    result = ask(engine, "r", "gpu:{worker_id}")
    assert result.missing == ["gpu:{worker_id}"]
    assert result.lease is None


# --- known engine bugs (see the report to the lead) --------------------------------------


def test_delete_with_two_waiters_on_the_deleted_limit(engine: Engine) -> None:
    create(engine, "a", 1)
    create(engine, "b", 5)
    ask(engine, "h", "a")
    ask(engine, "w1", "a", "b")
    ask(engine, "w2", "a", "b")
    engine.take_changes()
    engine.delete_limit("a")  # KeyError: 'a' from _head_fits while forgetting w1
    assert len(engine.queues) == 0
    assert engine.limits["b"].held == 2


def test_rejecting_a_head_waiter_wakes_those_behind_it_elsewhere(engine: Engine) -> None:
    create(engine, "a", 3)
    create(engine, "b", 3)
    ask(engine, "ha", "a")
    ask(engine, "hb", "b", occupy=2)
    assert ask(engine, "big", "a", "b", occupy=3).status == "queued"
    assert ask(engine, "small", "b").status == "queued"  # fits b, but FIFO behind "big"
    update(engine, "a", limit=2)  # "big" can never fit a now: rejected
    assert queue(engine, "b") == [], "small fits b and is first in line, yet still waits"


def test_rejecting_a_strict_waiter_on_delete_wakes_those_behind_it(engine: Engine) -> None:
    create(engine, "a", 1)
    create(engine, "b", 3)
    ask(engine, "ha", "a")
    ask(engine, "hb", "b", occupy=2)
    assert ask(engine, "big", "a", "b", occupy=1, strict=True).status == "queued"
    assert ask(engine, "small", "b").status == "queued"
    engine.delete_limit("a")
    assert "big" not in engine.queues
    assert queue(engine, "b") == [], "small fits b and is first in line, yet still waits"


def test_next_deadline_is_in_the_future_after_tick(engine: Engine, clock: FakeClock) -> None:
    create(engine, "a", 5, slot_decay_per_second=1)
    create(engine, "b", 1)
    ask(engine, "h", "b", lease_ttl=60)
    ask(engine, "w", "a", "b")  # waits on b's holder only; a has room
    engine.tick()
    deadline = engine.next_deadline()
    # The service arms call_later(deadline - now): a deadline of `now` that tick cannot
    # act on makes it call tick() in a busy loop until the holder of b releases.
    assert deadline is not None and deadline > clock.now()
