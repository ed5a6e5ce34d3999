"""Paged listings: every list operation returns pages and an opaque cursor to the next one.

Engine tests check the order and the seams (holders then waiters in `admin.limit.get`, items
leaving while a listing is paged, bad and stale cursors). The tests on real NATS create a few
thousand leases and waiters straight in the coordinator's engine (it runs in the test's event
loop), then list them through the SDK, the `gcl` command and the dashboard's data source.
"""

from __future__ import annotations

import json

import pytest

from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.protocol import AcquireRequest, Holder, LimitCreate
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.exceptions import InvalidRequest
from gcl.sdk.settings import NatsSettings
from gcl.tui.source import NatsSource
from tests.support.clock import FakeClock
from tests.test_cli import gcl

SECRET = "test-secret-0123456789"  # every request here is made with it

LEASES = 3_000
WAITERS = 2_500


def fill(engine: Engine, name: str, leases: int, waiters: int, **request: object) -> None:
    """`leases` holders of one slot each on `name`, then `waiters` queued behind them."""
    engine.create_limit(LimitCreate(name=name, limit=leases))
    for i in range(leases + waiters):
        holder = Holder(worker_id=f"w{i}", host="test", pid=i)
        ask = AcquireRequest(
            secret=SECRET, request_id=f"{name}-{i}", names=[name], holder=holder, **request
        )
        engine.acquire(ask)
    engine.take_changes()


def test_limits_page_by_name_with_a_pattern() -> None:
    engine = Engine(FakeClock())
    for i in range(25):
        engine.create_limit(LimitCreate(name=f"gpu:{i:02}", limit=1))
        engine.create_limit(LimitCreate(name=f"db:{i:02}", limit=1))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = engine.page_limits("gpu:*", 10, cursor)
        seen += [info.name for info in page.limits]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"gpu:{i:02}" for i in range(25)]
    assert engine.page_limits(None, 50, None).next_cursor is None
    assert engine.page_limits(None, 49, None).next_cursor is not None


def test_leases_page_in_grant_order_while_some_end() -> None:
    engine = Engine(FakeClock())
    fill(engine, "gpu", 30, 0)
    first = engine.page_leases(None, 10, None)
    assert [lease.request_id for lease in first.leases] == [f"gpu-{i}" for i in range(10)]
    for i in (3, 15, 16):  # one behind the cursor, two ahead of it
        engine.release(engine.lease_by_request[f"gpu-{i}"], SECRET)
    rest = engine.page_leases("gpu", 100, first.next_cursor)
    expected = [f"gpu-{i}" for i in range(10, 30) if i not in (15, 16)]
    assert [lease.request_id for lease in rest.leases] == expected
    assert rest.next_cursor is None


def test_limit_detail_pages_holders_then_waiters_with_positions() -> None:
    engine = Engine(FakeClock())
    fill(engine, "gpu", 5, 12)
    pages = []
    cursor = None
    for _ in range(10):
        page = engine.detail("gpu", 4, cursor)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p.holders) + len(p.waiters) for p in pages] == [4, 4, 4, 4, 1]
    holders = [h.request_id for p in pages for h in p.holders]
    waiters = [(w.position, w.request_id) for p in pages for w in p.waiters]
    assert holders == [f"gpu-{i}" for i in range(5)]
    assert waiters == [(i, f"gpu-{5 + i}") for i in range(12)]
    assert all(p.limit.waiters == 12 and p.limit.leases == 5 for p in pages)


def test_a_page_ending_exactly_with_the_holders_still_leads_to_the_waiters() -> None:
    engine = Engine(FakeClock())
    fill(engine, "gpu", 4, 3)
    page = engine.detail("gpu", 4)
    assert len(page.holders) == 4 and page.next_cursor is not None
    rest = engine.detail("gpu", 4, page.next_cursor)
    assert [w.position for w in rest.waiters] == [0, 1, 2] and rest.next_cursor is None


def test_bad_stale_and_foreign_cursors_are_refused() -> None:
    engine = Engine(FakeClock())
    fill(engine, "gpu", 3, 0)
    leases_cursor = engine.page_leases(None, 1, None).next_cursor
    for cursor in ("garbage", "Zm9vfGJhcnxiYXo", leases_cursor):
        with pytest.raises(Refusal) as caught:
            engine.page_limits(None, 1, cursor)
        assert caught.value.field == "cursor" and "from the start" in caught.value.message
    restarted = Engine(FakeClock())
    fill(restarted, "gpu", 3, 0)
    with pytest.raises(Refusal, match="restarted"):
        restarted.page_leases(None, 1, leases_cursor)


# --- on real NATS ---------------------------------------------------------------------------


async def test_sdk_follows_pages_of_thousands_of_leases_and_waiters(
    coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    fill(coordinator.engine, "gpu", LEASES, WAITERS)
    leases = await admin.list_leases()
    assert [lease.request_id for lease in leases] == [f"gpu-{i}" for i in range(LEASES)]
    assert len(await admin.list_leases("gpu")) == LEASES
    page = await admin.list_leases_page(limit=1_000)
    assert len(page.leases) == 1_000 and page.next_cursor is not None
    detail = await admin.get_limit("gpu")
    assert len(detail.holders) == LEASES and detail.next_cursor is None
    assert [w.position for w in detail.waiters] == list(range(WAITERS))
    assert detail.waiters[-1].request_id == f"gpu-{LEASES + WAITERS - 1}"
    with pytest.raises(InvalidRequest, match="cursor"):
        await admin.list_leases_page(cursor="bm90LW91cnM")


async def test_pages_of_long_leases_shrink_to_fit_one_nats_message(
    coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    names = [f"n{i:02}-" + "x" * 190 for i in range(32)]
    for name in names:
        coordinator.engine.create_limit(LimitCreate(name=name, limit=1_000))
    label = "l" * 200
    for i in range(600):  # ~8 KB each: 2,000 would be ~5 MB, far past NATS's 1 MB
        holder = Holder(worker_id="w" * 200, host="h" * 255, pid=i, label=label)
        coordinator.engine.acquire(
            AcquireRequest(secret=SECRET, request_id=f"r{i}", names=names, holder=holder)
        )
    coordinator.engine.take_changes()
    page = await admin.list_leases_page(limit=2_000)
    assert 0 < len(page.leases) < 600 and page.next_cursor is not None
    assert len(await admin.list_leases()) == 600


async def test_cli_and_dashboard_list_everything(
    nats_server: NatsServer, coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    fill(coordinator.engine, "gpu", LEASES, WAITERS)
    for i in range(1_200):
        coordinator.engine.create_limit(LimitCreate(name=f"many:{i:04}", limit=1))
    coordinator.engine.take_changes()

    leases = await gcl(nats_server, "leases", "--json")
    assert leases.code == 0, leases.err
    assert len(json.loads(leases.out)) == LEASES
    inspect = await gcl(nats_server, "inspect", "gpu", "--json")
    assert inspect.code == 0, inspect.err
    detail = json.loads(inspect.out)
    assert len(detail["holders"]) == LEASES and len(detail["waiters"]) == WAITERS
    listed = await gcl(nats_server, "ls", "--json")
    assert listed.code == 0, listed.err
    assert len(json.loads(listed.out)) == 1_201

    source = NatsSource(NatsSettings(nats_url=nats_server.url))
    await source.open(lambda _up: None)
    try:
        assert len(await source.list_limits()) == 1_201
        assert len((await source.get_limit("gpu")).waiters) == WAITERS
    finally:
        await source.close()
