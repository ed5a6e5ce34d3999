"""A block's exit sends its release and returns: one round trip per block (issue #13).

The release is confirmed in the background, ordered before the client's next request, and
flushed when the client closes, when `asyncio.run` ends and when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.msg import Msg

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.protocol import RELEASE
from gcl.sdk import AsyncAdminClient, AsyncClient, ClientSettings


def pause_releases(coordinator: Coordinator) -> tuple[asyncio.Event, list[Msg]]:
    """Hold every release the coordinator receives until the returned event is set."""
    sub = coordinator._subs[coordinator.subjects.op("*")]  # acquire, renew, release in order
    handle: Callable[[Msg], Awaitable[None]] = sub._cb  # type: ignore[assignment]
    go = asyncio.Event()
    seen: list[Msg] = []

    async def paused(msg: Msg) -> None:
        if msg.subject == coordinator.subjects.op(RELEASE.name):
            seen.append(msg)
            await go.wait()
        await handle(msg)

    sub._cb = paused
    return go, seen


async def test_exit_does_not_wait_for_the_release_reply(
    coordinator: Coordinator, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("behind:one", 1)
    go, seen = pause_releases(coordinator)
    async with client.concurrency("behind:one") as lease:
        pass
    # The exit returned although the coordinator has not handled (or even read) the release.
    assert lease.lease_id in coordinator.engine.leases
    assert not lease.lost
    await asyncio.sleep(0.05)
    assert len(seen) == 1 and lease.lease_id in coordinator.engine.leases
    go.set()
    await client.flush_releases()
    assert lease.lease_id not in coordinator.engine.leases
    assert (await admin.get_limit("behind:one")).limit.held == 0
    assert client.release_failures == client.late_losses == 0


async def test_the_next_acquire_sees_the_slot_the_last_release_freed(
    client: AsyncClient, admin: AsyncAdminClient
) -> None:
    """Release then acquire on one connection reach the coordinator in that order: a
    try-once acquire of a one-slot limit right after a block never finds it taken."""
    await admin.create_limit("behind:once", 1)
    tokens: list[int] = []
    for _ in range(200):
        async with client.concurrency("behind:once", timeout_seconds=0) as lease:
            assert lease.fencing_token is not None
            tokens.append(lease.fencing_token)
    assert tokens == sorted(set(tokens))  # fencing tokens only go up
    await client.flush_releases()
    assert (await admin.get_limit("behind:once")).limit.held == 0


async def test_close_flushes_pending_releases(
    coordinator: Coordinator, client_settings: ClientSettings, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("behind:close", 5)
    own = AsyncClient(client_settings)
    for _ in range(2):
        async with own.concurrency("behind:close", lease_ttl=60):
            pass
    async with own.concurrency("behind:close", lease_ttl=60):
        go, _ = pause_releases(coordinator)  # from here on, releases wait (in order)
    # That release is sent and not handled: the coordinator still counts its slot.
    assert (await admin.get_limit("behind:close")).limit.held >= 1
    closing = asyncio.ensure_future(own.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # aclose waits for their replies
    go.set()
    await asyncio.wait_for(closing, 5)
    assert (await admin.get_limit("behind:close")).limit.held == 0


SYNC_SCRIPT = """
    from gcl.sync import concurrency
    with concurrency("behind:script", lease_ttl=60):
        pass
"""
ASYNC_SCRIPT = """
    import asyncio
    from gcl.asyncio import concurrency

    async def main():
        async with concurrency("behind:script", lease_ttl=60):
            pass

    asyncio.run(main())
"""


async def run_script(nats_server: NatsServer, script: str) -> None:
    env: dict[str, Any] = {**os.environ, "GCL_NATS_URL": nats_server.url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(script), env=env
    )
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_script_that_ends_after_a_block_leaves_no_lease(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("behind:script", 5)
    for script in (SYNC_SCRIPT, ASYNC_SCRIPT):
        await run_script(nats_server, script)
        # Right away, not after a ttl: the release left before the process ended.
        assert await admin.list_leases("behind:script") == [], script


def test_acquire_renew_and_release_share_one_subscription(coordinator: Coordinator) -> None:
    """nats-py runs each subscription on a task of its own: on separate ones a release sent
    without waiting could be handled after the acquire its client sent next. On one, NATS's
    per-connection order holds (the 200 try-once blocks above depend on it)."""
    in_order = coordinator.subjects.op("*")
    assert in_order in coordinator._subs
    for name in ("acquire", "renew", "release"):
        assert coordinator.subjects.op(name) not in coordinator._subs


async def test_a_block_after_a_block_pays_one_commit(
    coordinator: Coordinator, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    """A release's commit waits (QUIET_COMMIT_DELAY) for the next grant's, and rides it: a
    loop of blocks costs about one commit per block, not two in a row."""
    await admin.create_limit("behind:commits", 5)
    async with client.concurrency("behind:commits"):
        pass
    await client.flush_releases()
    apply = coordinator.store.apply
    commits = 0

    def counted(batch: Any) -> Any:
        nonlocal commits
        commits += 1
        return apply(batch)

    coordinator.store.apply = counted  # type: ignore[method-assign]
    for _ in range(50):
        async with client.concurrency("behind:commits"):
            pass
    await client.flush_releases()
    assert commits < 75, commits  # 100 without the delay; slack for a slow host
    assert (await admin.get_limit("behind:commits")).limit.held == 0


async def test_a_loss_found_only_by_the_release_is_logged_and_counted(
    client: AsyncClient, admin: AsyncAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The trade-off: a loss the client had not heard of before the exit cannot raise there
    any more (the exit does not wait for the release's answer); it is logged and counted."""
    await admin.create_limit("behind:late", 1)
    async with client.concurrency("behind:late", lease_ttl=60) as lease:
        assert lease.lease_id is not None
        del client._leases[lease.lease_id]  # the pushed loss notice finds nothing: not heard
        await admin.revoke_lease(lease.lease_id)
        await asyncio.sleep(0.1)
        assert not lease.lost
    await client.flush_releases()
    assert lease.lost and client.late_losses == 1
    assert "found only by its release" in caplog.text
