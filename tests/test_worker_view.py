"""The worker's view over a real NATS: loss pushed at once, and "why am I blocked".

Timing bounds here are generous (a loaded 2-core machine): they prove the news is pushed, not
found at the next renewal (a third of a 30 s TTL). bench/loss_push.py measures the speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient, Client
from gcl.sdk.exceptions import AcquireTimeout, LeaseLost
from gcl.sdk.settings import ClientSettings
from gcl.sdk.waiting import Waiting
from tests.conftest import ROOT, wait_until

TTL = 30.0  # renewals every 10 s: anything much faster than that was pushed
PUSHED = 3.0  # generous bound for "at once" on a busy machine; bench/loss_push.py measures it


def settings_for(nats: NatsServer, **overrides: object) -> ClientSettings:
    return ClientSettings(nats_url=nats.url, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def alice(nats_server: NatsServer, coordinator: Coordinator) -> AsyncAdminClient:
    """An operator whose admin requests name her (the subject's last token, as with roles)."""
    async with AsyncAdminClient(settings_for(nats_server, nats_identity="alice")) as admin:
        yield admin


# --- loss pushed to the holder -------------------------------------------------------------


async def test_a_revoke_cancels_the_holder_at_once_and_says_who(
    client: AsyncClient, alice: AsyncAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    await alice.create_limit("gpu", 1)
    cancelled_at = 0.0
    with pytest.raises(LeaseLost, match="revoked") as caught:
        async with client.concurrency("gpu", lease_ttl=TTL, cancel_on_lost=True) as lease:
            assert lease.lease_id is not None
            revoked_at = time.monotonic()
            await alice.revoke_lease(lease.lease_id)
            try:
                await asyncio.sleep(TTL)
            finally:
                cancelled_at = time.monotonic()
    assert cancelled_at - revoked_at < PUSHED
    assert caught.value.actor == "alice" and "alice" in caught.value.reason
    assert lease.lost_by == "alice"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("was lost" in m and "revoked by an operator" in m and "alice" in m for m in logged)


async def test_the_on_lost_hook_and_a_deleted_limit(
    client: AsyncClient, alice: AsyncAdminClient
) -> None:
    await alice.create_limit("tmp", 2)
    heard: list[str] = []
    with pytest.raises(LeaseLost, match="deleted"):
        async with client.concurrency(
            "tmp", lease_ttl=TTL, on_lost=lambda lease: heard.append(lease.lost_reason)
        ):
            await alice.delete_limit("tmp")
            await wait_until(lambda: heard, timeout=PUSHED)
    assert len(heard) == 1 and "limit 'tmp' was deleted" in heard[0]


async def test_a_sync_holder_sees_lease_lost_before_any_renewal(
    nats_server: NatsServer, alice: AsyncAdminClient
) -> None:
    await alice.create_limit("db", 1)
    held: queue.Queue[str] = queue.Queue()

    def body() -> float:
        """A sync worker (its own thread: the coordinator runs on this test's loop)."""
        took = TTL
        client = Client(settings_for(nats_server))
        with client, pytest.raises(LeaseLost), client.concurrency("db", lease_ttl=TTL) as lease:
            held.put(lease.lease_id or "")
            started = time.monotonic()
            while not lease.lost and time.monotonic() - started < TTL:
                time.sleep(0.01)
            took = time.monotonic() - started
        return took

    noticed = asyncio.create_task(asyncio.to_thread(body))
    lease_id = await asyncio.to_thread(held.get, True, 20)
    await alice.revoke_lease(lease_id)
    assert await asyncio.wait_for(noticed, TTL + 10) < PUSHED


async def test_an_expired_lease_is_pushed_too(client: AsyncClient, admin: AsyncAdminClient) -> None:
    await admin.create_limit("slow", 1)
    lease = await client.acquire("slow", lease_ttl=1)  # acquired, never renewed
    await wait_until(lambda: lease.lost, timeout=1 + PUSHED)
    assert lease.lost_reason.startswith("expired")


# --- why am I blocked ----------------------------------------------------------------------


async def test_a_blocked_waiter_says_who_holds_its_slots_and_where_it_stands(
    nats_server: NatsServer,
    coordinator: Coordinator,
    admin: AsyncAdminClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gcl.sdk")
    await admin.create_limit("gpu:gpu-1", 1)
    quick = settings_for(nats_server, wait_report_after=0.3, wait_report_every=0.5)
    heard: list[Waiting] = []
    async with (
        AsyncClient(quick, worker_id="gpu-2", label="train") as holder,
        AsyncClient(quick, worker_id="gpu-3") as ahead,
        AsyncClient(quick, worker_id="gpu-4") as waiter,
        holder.concurrency("gpu:gpu-1", lease_ttl=TTL),
    ):
        first = asyncio.create_task(ahead.acquire("gpu:gpu-1"))
        await wait_until(lambda: _waiters(admin, "gpu:gpu-1", 1))
        with pytest.raises(AcquireTimeout) as caught:
            await waiter.acquire("gpu:gpu-1", timeout_seconds=2.0, on_wait=heard.append)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)

    # the log, a second into the wait and again later
    lines = [r.getMessage() for r in caplog.records if "2nd in line" in r.getMessage()]
    assert len(lines) >= 2, caplog.text
    assert (
        lines[0].startswith("waiting ") and "for 1 slot on gpu:gpu-1: 2nd in line of 2" in lines[0]
    )
    assert "1/1 occupied by gpu-2@" in lines[0] and "[train] for " in lines[0]
    # the callback got the same facts
    assert heard and heard[0].positions == {"gpu:gpu-1": 1}
    assert heard[0].holders["gpu:gpu-1"][0].startswith("gpu-2@")
    # and so did the timeout, as attributes and in its message
    error = caught.value
    assert error.positions == {"gpu:gpu-1": 1}
    assert error.holders["gpu:gpu-1"][0].startswith("gpu-2@")
    assert "2nd in line" in str(error) and "gpu-2@" in str(error)
    assert error.waiting is not None and error.waiting.waited_seconds >= 1.5


async def test_the_estimate_comes_from_recent_holds(
    nats_server: NatsServer, coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("solo", 1)
    quick = settings_for(nats_server, wait_report_after=0.2, wait_report_every=5)
    heard: list[Waiting] = []
    async with AsyncClient(quick) as one, AsyncClient(quick) as two:
        async with one.concurrency("solo"):
            await asyncio.sleep(0.5)  # one hold of ~0.5 s to judge by
        async with one.concurrency("solo"):
            waiting = asyncio.create_task(two.acquire("solo", on_wait=heard.append))
            await wait_until(lambda: heard, timeout=10)
        lease = await asyncio.wait_for(waiting, 10)
        await two.release(lease)
    estimate = heard[0].estimate_seconds
    assert estimate is not None and 0 <= estimate <= 1.0
    assert "may run" in str(heard[0])


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


@pytest.mark.slow
def test_the_loss_bench_runs(tmp_path: Path) -> None:
    """bench/loss_push.py still runs end to end (its figures are not asserted: noise here)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loss_push.py"), "--revokes", "5"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "revoke -> cancel" in done.stdout and "p99" in done.stdout
