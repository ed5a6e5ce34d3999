"""Wait queues without scans: positions, heads and pages stay right after removals anywhere.

`WaitQueues` keeps each queue in a `Ranked` (an order-statistics list), so a waiter's position
is its arrival rank minus those who left before it. These tests check that against a plain
list model, and through the engine, after withdrawals in the middle of a queue.
"""

from __future__ import annotations

import random

from gcl.coordinator.engine import Engine
from gcl.coordinator.ranked import Ranked
from gcl.coordinator.waiters import Waiter, WaitQueues
from gcl.protocol import AcquireRequest, Holder, LimitCreate
from tests.support.clock import FakeClock

SECRET = "test-secret-0123456789"  # every request here is made with it


def waiter(request_id: str, *names: str) -> Waiter:
    request = AcquireRequest(secret=SECRET, request_id=request_id, names=list(names))
    return Waiter(request, list(names), [], queued_at=0.0, deadline=0.0)


def test_ranked_matches_a_list_under_random_removals() -> None:
    rng = random.Random(7)
    ranked: Ranked[str] = Ranked(lambda item: item)
    model: list[str] = []
    for step in range(3_000):
        if model and rng.random() < 0.45:
            gone = model.pop(rng.randrange(len(model)))
            assert ranked.pop(gone) is not None
        else:
            ranked.add(f"i{step}")
            model.append(f"i{step}")
        if model and step % 50 == 0:
            assert list(ranked) == model
            probe = rng.choice(model)
            assert ranked.rank(probe) == model.index(probe)
            assert ranked.first() == ranked[model[0]]
    assert ranked.rank("never") == -1
    assert ranked.pop("never") is None


def test_positions_stay_right_after_withdrawals_in_the_middle() -> None:
    queues = WaitQueues()
    everyone = [waiter(f"w{i}", "gpu") for i in range(1_000)]
    for w in everyone:
        queues.add(w)
    gone = {f"w{i}" for i in range(100, 900, 3)} | {"w0", "w999"}
    for w in everyone:
        if w.request_id in gone:
            queues.remove(w)
    staying = [w.request_id for w in everyone if w.request_id not in gone]
    assert [w.request_id for w in queues.queue("gpu")] == staying
    for expected, request_id in enumerate(staying):
        assert queues.position("gpu", request_id) == expected
    assert queues.position("gpu", "w0") == -1
    head = queues.head("gpu")
    assert head is not None and head.request_id == "w1"
    assert queues.depth("gpu") == len(staying)


def test_pages_resume_after_their_cursor_with_positions() -> None:
    queues = WaitQueues()
    everyone = [waiter(f"w{i}", "gpu", "db") for i in range(25)]
    for w in everyone:
        queues.add(w)
    for i in (3, 4, 10):
        queues.remove(everyone[i])
    first = queues.page("gpu", None, 7)
    assert [(p, w.request_id) for _, p, w in first] == [
        (0, "w0"),
        (1, "w1"),
        (2, "w2"),
        (3, "w5"),
        (4, "w6"),
        (5, "w7"),
        (6, "w8"),
    ]
    queues.remove(everyone[1])  # behind the cursor: later positions move up
    queues.remove(everyone[20])  # ahead of it: never listed
    rest = []
    cursor = first[-1][0]
    for _ in range(10):  # bounded: 25 waiters, pages of 7
        page = queues.page("gpu", cursor, 7)
        if not page:
            break
        rest.extend((p, w.request_id) for _, p, w in page)
        cursor = page[-1][0]
    expected = [f"w{i}" for i in (9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24)]
    assert rest == list(enumerate(expected, start=6))


def test_engine_reports_positions_after_middle_withdrawals() -> None:
    engine = Engine(FakeClock())
    engine.create_limit(LimitCreate(name="gpu", limit=1))
    engine.acquire(AcquireRequest(secret=SECRET, request_id="holder", names=["gpu"]))
    ids = [f"w{i}" for i in range(200)]
    for i, request_id in enumerate(ids):
        holder = Holder(worker_id=f"worker-{i}")
        engine.acquire(
            AcquireRequest(secret=SECRET, request_id=request_id, names=["gpu"], holder=holder)
        )
    for request_id in ids[50:150:2]:
        assert engine.withdraw(request_id, SECRET, "cancelled").status == "withdrawn"
    staying = [r for r in ids if r not in set(ids[50:150:2])]
    for expected, request_id in enumerate(staying):
        again = engine.acquire(
            AcquireRequest(
                secret=SECRET,
                request_id=request_id,
                names=["gpu"],
                holder=Holder(worker_id=f"worker-{ids.index(request_id)}"),
            )
        )
        assert again.status == "queued" and again.positions == {"gpu": expected}
    assert [w.request_id for _, _, w in engine.queues.page("gpu", None, 1_000)] == staying
