"""Models the engine builds without validation (`built`) equal validated ones, field for field.

The hot path skips pydantic's validation for what the coordinator computes itself; if a call
site forgot a field, or gave one a value of the wrong shape, this is where it shows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gcl.coordinator.changes import Changes
from gcl.coordinator.engine import Engine
from gcl.coordinator.limits import Limit
from gcl.coordinator.trusted import built
from gcl.protocol import AcquireRequest, Holder, LimitCreate, LimitInfo
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"


def assert_complete(model: BaseModel) -> None:
    """Every field present, and the same object as validating its own dump gives."""
    assert set(model.__dict__) == set(type(model).model_fields), type(model).__name__
    again = type(model).model_validate_json(model.model_dump_json())
    assert again == model
    assert again.model_dump_json() == model.model_dump_json()
    for value in model.__dict__.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                assert_complete(item)


def test_results_and_events_of_a_grant_renew_and_release_are_complete() -> None:
    engine = Engine(FakeClock(), keepalive_seconds=2.0)
    engine.create_limit(LimitCreate(name="db", limit=2))
    holder = Holder(worker_id="w", host="h", pid=7, label="job")
    request = AcquireRequest(
        secret=SECRET, request_id="r1", names=["db"], holder=holder, notify="inbox.r1"
    )
    granted = engine.acquire(request)
    assert granted.lease is not None
    lease_id = granted.lease.lease_id
    results: list[Any] = [
        granted,
        engine.renew(lease_id, SECRET),
        engine.release(lease_id, SECRET),
    ]
    events = engine.take_changes().events
    assert [e.kind for e in events] == ["limit.created", "lease.granted", "lease.released"]
    for model in [*results, *events]:
        assert_complete(model)


def test_built_equals_the_validated_model_of_the_same_values() -> None:
    info = Limit(name="db", limit=3, fencing_token=9).info(now=0.0, waiters=1)
    assert info == LimitInfo.model_validate(info.model_dump())
    event = built(LimitInfo, **info.model_dump())
    assert event == info and event.model_fields_set == set(LimitInfo.model_fields)


def test_a_batch_snapshots_its_limits_at_hand_off_not_later() -> None:
    """The engine records the live limit; `freeze` copies it, so a commit waiting its turn
    writes the state of its own steps, not of steps taken after it was handed over."""
    limit = Limit(name="db", limit=3, fencing_token=5)
    batch = Changes()
    batch.put_limit("db", limit)
    batch.freeze()
    limit.fencing_token = 6
    frozen = batch.limits["db"]
    assert frozen is not None and frozen is not limit and frozen.fencing_token == 5
