"""The byte sizes gcl builds on, computed from the protocol's own limits.

The largest valid request must fit well under what the coordinator reads (MAX_REQUEST_BYTES),
and the largest reply, notice and event it causes well under NATS's max_payload (MAX_PAYLOAD,
which `gcl up` and compose.yaml set), as must the admin view of a limit with 1,000 holders: a
margin, asserted, not hoped for.
"""

from __future__ import annotations

import json
import uuid

from gcl.coordinator.engine import Engine
from gcl.coordinator.service import _ok
from gcl.protocol import (
    MAX_LEASE_TTL,
    MAX_NAMES,
    MAX_OCCUPY,
    MAX_PAYLOAD,
    MAX_REQUEST_BYTES,
    MAX_SLOTS,
    AcquireRequest,
    Holder,
    LimitCreate,
    LimitListRequest,
    LimitUpdate,
    Message,
)
from gcl.protocol.names import MAX_NAME_LENGTH
from tests.support.clock import FakeClock

WIDE = "\U0001f600"  # printable, allowed in names, 4 bytes in UTF-8, 12 as \ud83d\ude00


def largest_names() -> list[str]:
    return [f"{i:02d}" + WIDE * (MAX_NAME_LENGTH - 2) for i in range(MAX_NAMES)]


def largest_acquire(request_id: str = "r" * 64) -> AcquireRequest:
    return AcquireRequest(
        request_id=request_id,
        secret="s" * 128,
        names=largest_names(),
        occupy=MAX_OCCUPY,
        lease_ttl=MAX_LEASE_TTL - 0.123456789,
        strict=True,
        holder=Holder(worker_id=WIDE * 200, host=WIDE * 255, pid=2**31, label=WIDE * 200),
        notify="n" * 255,
    )


def as_sdk_writes(request: Message) -> bytes:
    return request.model_dump_json().encode()


def as_escaped(request: Message) -> bytes:
    """What a client using Python's json.dumps defaults sends: every non-ASCII character
    \\u-escaped, astral ones as surrogate pairs (12 bytes for a 4-byte character)."""
    return json.dumps(request.model_dump(mode="json")).encode()


def test_the_largest_request_fits_with_margin() -> None:
    acquire = largest_acquire()
    compact, escaped = len(as_sdk_writes(acquire)), len(as_escaped(acquire))
    assert 25_000 < compact < escaped  # the limits really are near their maximum
    assert compact * 4 <= MAX_REQUEST_BYTES, compact
    assert escaped * 1.4 <= MAX_REQUEST_BYTES, escaped
    assert MAX_REQUEST_BYTES * 2 <= MAX_PAYLOAD
    others = [
        LimitCreate(name=WIDE * MAX_NAME_LENGTH, limit=MAX_SLOTS, slot_decay_per_second=1e9),
        LimitUpdate(name=WIDE * MAX_NAME_LENGTH, limit=MAX_SLOTS, active=True),
        LimitListRequest(pattern=WIDE * 400),
    ]
    assert all(len(as_escaped(other)) < compact for other in others)


def test_the_largest_reply_notice_and_event_fit_with_margin() -> None:
    """Granted at once, then queued and granted from the queue: every message it causes."""
    engine = Engine(FakeClock())
    for name in largest_names():
        engine.create_limit(LimitCreate(name=name, limit=MAX_SLOTS, slot_decay_per_second=1e9))
        limit = engine.limits[name]
        limit.denied = limit.hold_count = 2**62
        limit.hold_seconds_total = 1.234567890123e300
    engine.take_changes()
    first = largest_acquire()
    granted = engine.acquire(first)
    assert granted.status == "granted" and granted.lease is not None
    big = first.model_copy(update={"request_id": "q" * 64, "occupy": MAX_SLOTS - MAX_OCCUPY + 1})
    assert engine.acquire(big).status == "queued"
    engine.release(granted.lease.lease_id, "s" * 128)
    changes = engine.take_changes()
    replies = [_ok(granted), _ok(engine.acquire(big))]
    notices = [notice.model_dump_json().encode() for _, notice in changes.notices]
    events = [event.model_dump_json().encode() for event in changes.events]
    assert notices and {e.kind for e in changes.events} >= {"lease.granted", "lease.released"}
    largest = max(len(m) for m in replies + notices + events)
    assert largest > 50_000  # near the maximum
    assert largest * 4 <= MAX_PAYLOAD, largest


def test_a_limit_with_a_thousand_holders_can_be_inspected() -> None:
    """`gcl inspect` / `gcl leases` of a limit held by 1,000 leases (the bench's restart test
    has one) fit under max_payload in one page; larger lists come in pages (the coordinator
    halves a page that would not fit)."""
    engine = Engine(FakeClock())
    engine.create_limit(LimitCreate(name="db:primary", limit=100_000))
    holder = Holder(worker_id="worker-0042", host="node-17.cluster.local", pid=123456, label="etl")
    for _ in range(1_000):
        request = AcquireRequest(
            request_id=uuid.uuid4().hex,
            secret="held-secret-0123456789",
            names=["db:primary"],
            holder=holder,
        )
        assert engine.acquire(request).status == "granted"
    detail = len(_ok(engine.detail("db:primary", size=1_000)))  # one page of 1,000 holders
    assert detail > 300_000
    assert detail * 1.4 <= MAX_PAYLOAD, detail
    assert MAX_PAYLOAD < 1024 * 1024  # below NATS's default: bigger messages never get in
