"""Acquiring and releasing through a real NATS server and coordinator."""

from __future__ import annotations

import asyncio
import time

import pytest

from gcl.protocol import ACQUIRE, AcquireRequest
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import AcquireTimeout, InvalidRequest, LimitNotFound
from gcl.sdk.settings import ClientSettings
from gcl.sdk.transport import Rpc
from tests.conftest import wait_until


async def test_grant_and_release_moves_occupancy(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("db", 3)
    async with client.concurrency("db", occupy=2) as lease:
        assert lease.lease_id is not None
        assert (await admin.get_limit("db")).limit.held == 2
    await client.flush_releases()  # the exit sent the release; an admin reads on its own link
    assert (await admin.get_limit("db")).limit.held == 0


async def test_waiter_enters_within_50ms_of_release(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("gpu", 1)
    entered: list[float] = []
    released_at = 0.0

    async def waiter() -> None:
        async with client.concurrency("gpu"):
            entered.append(time.monotonic())

    async with client.concurrency("gpu"):
        task = asyncio.create_task(waiter())
        await wait_until(lambda: _waiters(admin, "gpu", 1))
        released_at = time.monotonic()
    await asyncio.wait_for(task, 5)
    assert entered[0] - released_at < 0.050


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


async def test_fifo_order_and_a_big_request_is_not_starved(
    client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("pool", 3)
    order: list[str] = []

    async def take(tag: str, occupy: int) -> None:
        async with client.concurrency("pool", occupy=occupy):
            order.append(tag)
            await asyncio.sleep(0.02)

    async with client.concurrency("pool", occupy=2):
        tasks = [asyncio.create_task(take("big", 3))]
        await wait_until(lambda: _waiters(admin, "pool", 1))
        for i in range(5):  # one slot is free, yet these must queue behind the big one
            tasks.append(asyncio.create_task(take(f"small{i}", 1)))
            await wait_until(lambda n=i: _waiters(admin, "pool", n + 2))
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == ["big", "small0", "small1", "small2", "small3", "small4"]


async def test_multi_name_acquire_is_atomic_and_order_free(
    client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("a", 1)
    await admin.create_limit("b", 1)
    done: list[str] = []

    async def both(tag: str, names: list[str]) -> None:
        for _ in range(20):
            async with client.concurrency(names):
                detail_a = (await admin.get_limit("a")).limit
                assert detail_a.held == 1
        done.append(tag)

    async with client.concurrency("b"):
        blocked = asyncio.create_task(client.acquire(["a", "b"]))
        await wait_until(lambda: _waiters(admin, "a", 1))
        # all or nothing: while b is held, the waiter holds nothing on a either
        assert (await admin.get_limit("a")).limit.held == 0
    lease = await asyncio.wait_for(blocked, 5)
    await client.release(lease)
    await asyncio.wait_for(asyncio.gather(both("ab", ["a", "b"]), both("ba", ["b", "a"])), 20)
    assert sorted(done) == ["ab", "ba"]


async def test_occupy_above_limit_fails_at_once(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("gpu", 2)
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="occupy=3"):
        async with client.concurrency("gpu", occupy=3):
            pass
    assert time.monotonic() - started < 1


async def test_inactive_limit_never_blocks_but_records_leases(
    client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("dry", 1, active=False)
    async with client.concurrency("dry"), client.concurrency("dry", occupy=5):
        info = (await admin.get_limit("dry")).limit
        assert info.held == 6 and info.leases == 2
        assert info.denied == 1  # the second would have waited


async def test_missing_limit_is_not_enforced_unless_strict(
    client: AsyncClient, admin: AsyncAdminClient
):
    async with client.concurrency("nobody-made-me") as lease:
        assert lease.missing == ["nobody-made-me"]
    with pytest.raises(LimitNotFound, match="gcl create"):
        async with client.concurrency("nobody-made-me", strict=True):
            pass


async def test_timeout_zero_tries_once_and_timeout_raises(
    client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("one", 1)
    async with client.concurrency("one"):
        with pytest.raises(AcquireTimeout):
            await client.acquire("one", timeout_seconds=0)
        started = time.monotonic()
        with pytest.raises(AcquireTimeout, match="waited"):
            await client.acquire("one", timeout_seconds=0.3)
        assert 0.25 < time.monotonic() - started < 3
        assert (await admin.get_limit("one")).limit.waiters == 0  # it left the queue


async def test_cancelled_waiter_leaves_the_queue(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("one", 1)
    async with client.concurrency("one"):
        task = asyncio.create_task(client.acquire("one"))
        await wait_until(lambda: _waiters(admin, "one", 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: _waiters(admin, "one", 0))
    # no phantom grant holds the slot: it is free at once
    lease = await client.acquire("one", timeout_seconds=0)
    await client.release(lease)


async def test_resent_acquire_gets_the_same_lease(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("idem", 2)
    rpc: Rpc = await client._ready()
    request = AcquireRequest(request_id="retry-1", secret="retry-secret-0123456789", names=["idem"])
    first = await rpc.call(ACQUIRE, request)
    second = await rpc.call(ACQUIRE, request)
    assert first.lease is not None and second.lease is not None
    assert first.lease.lease_id == second.lease.lease_id
    assert (await admin.get_limit("idem")).limit.held == 1


async def test_fencing_tokens_only_grow(client: AsyncClient, admin: AsyncAdminClient):
    await admin.create_limit("fence", 1)
    tokens = []
    for _ in range(3):
        async with client.concurrency("fence") as lease:
            tokens.append(lease.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


async def test_bad_input_is_refused_before_the_network(client: AsyncClient):
    with pytest.raises(InvalidRequest, match="whitespace"):
        await client.acquire("has space")
    with pytest.raises(InvalidRequest, match="occupy"):
        await client.acquire("ok", occupy=0)
    with pytest.raises(InvalidRequest, match="timeout_seconds"):
        await client.acquire("ok", timeout_seconds=float("nan"))


async def test_first_acquire_of_a_fresh_client_is_pushed_its_grant(
    client: AsyncClient, admin: AsyncAdminClient, client_settings: ClientSettings
):
    """A client's very first request (no `async with`, as the module-level API does) must name
    its inbox, or it only learns of its grant at the next keepalive, seconds later."""
    await admin.create_limit("gpu", 1)
    fresh = AsyncClient(client_settings)
    try:
        async with client.concurrency("gpu"):
            task = asyncio.create_task(fresh.acquire("gpu"))
            await wait_until(lambda: _waiters(admin, "gpu", 1))
            released_at = time.monotonic()
        lease = await asyncio.wait_for(task, 5)
        assert time.monotonic() - released_at < 1.0  # a keepalive comes only after 2 s
        await fresh.release(lease)
    finally:
        await fresh.aclose()
