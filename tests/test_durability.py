"""Crashes and restarts: holders killed, the coordinator killed, the same on PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gcl.coordinator.nats_server import NatsServer
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.settings import ClientSettings
from tests.conftest import ROOT, CoordinatorProcess, pg_conninfo, wait_until


def _spawn_holder(nats_url: str, name: str, ttl: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", nats_url, name, str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("ttl", [1.0, 3.0])
async def test_sigkilled_holder_frees_its_slot_within_ttl_plus_1s(
    client: AsyncClient, admin: AsyncAdminClient, nats_server: NatsServer, ttl: float
):
    await admin.create_limit("gpu", 1)
    holder = await asyncio.to_thread(_spawn_holder, nats_server.url, "gpu", ttl)
    await asyncio.sleep(ttl)  # it renews meanwhile: the slot stays taken
    assert (await admin.get_limit("gpu")).limit.held == 1
    holder.kill()
    killed_at = time.monotonic()
    holder.wait(10)
    lease = await client.acquire("gpu", timeout_seconds=ttl + 5)
    assert time.monotonic() - killed_at <= ttl + 1.0
    await client.release(lease)


async def test_coordinator_kill9_restores_leases_and_serves_queued_waiters(
    coordinator_process: Callable[..., CoordinatorProcess], nats_server: NatsServer, db_url: str
):
    settings = ClientSettings(nats_url=nats_server.url, unavailable_timeout=30)
    proc = coordinator_process(db_url=db_url)
    running = 0
    peak = 0
    async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
        await admin.create_limit("gpu", 2)
        held = await client.acquire("gpu", occupy=2, lease_ttl=5)
        token_before = held.fencing_token or 0

        async def waiter() -> int | None:
            nonlocal running, peak
            async with client.concurrency("gpu", lease_ttl=5) as lease:
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.05)
                running -= 1
                return lease.fencing_token

        waiters = [asyncio.create_task(waiter()) for _ in range(4)]
        await wait_until(lambda: _waiting(admin, 4))
        proc.kill()
        await asyncio.to_thread(proc.start)
        # the lease survived the crash; nothing was granted beyond the limit meanwhile
        detail = await admin.get_limit("gpu")
        assert [h.lease_id for h in detail.holders] == [held.lease_id]
        assert detail.limit.held == 2
        await wait_until(lambda: _waiting(admin, 4), timeout=15)  # they re-queued by themselves
        await client.release(held)
        tokens = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert peak <= 2
    assert all(t is not None and t > token_before for t in tokens)


async def _waiting(admin: AsyncAdminClient, count: int) -> bool:
    return (await admin.get_limit("gpu")).limit.waiters == count


async def test_limits_and_tokens_survive_a_clean_restart(
    coordinator_process: Callable[..., CoordinatorProcess], nats_server: NatsServer, db_url: str
):
    settings = ClientSettings(nats_url=nats_server.url)
    proc = coordinator_process(db_url=db_url)
    async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
        await admin.create_limit("db", 20, slot_decay_per_second=0.5)
        await admin.create_limit("off", 1, active=False)
        async with client.concurrency("db") as lease:
            first = lease.fencing_token or 0
        proc.stop()
        await asyncio.to_thread(proc.start)
        limits = {info.name: info for info in await admin.list_limits()}
        assert limits["db"].limit == 20 and limits["db"].slot_decay_per_second == 0.5
        assert limits["off"].active is False
        async with client.concurrency("db") as lease:
            assert (lease.fencing_token or 0) > first


def test_many_processes_never_exceed_the_limit(
    coordinator_process: Callable[..., CoordinatorProcess], nats_server: NatsServer
):
    coordinator_process()
    from gcl.sdk.admin import AdminClient

    with AdminClient(ClientSettings(nats_url=nats_server.url)) as admin:
        admin.create_limit("scarce", 3)
    ctx = multiprocessing.get_context("spawn")
    inside, peak, served = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    processes, holders, rounds = 3, 8, 6
    workers = [
        ctx.Process(
            target=_contend_entry,
            args=(nats_server.url, seed, holders, rounds, inside, peak, served),
        )
        for seed in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert served.value == processes * holders * rounds
    assert peak.value == 3  # saturated, never above


def _contend_entry(url: str, seed: int, holders: int, rounds: int, *shared: object) -> None:
    from tests.workers import contend

    contend(url, "scarce", holders, rounds, seed, *shared)


async def test_leases_ride_out_a_nats_restart(
    client: AsyncClient, admin: AsyncAdminClient, nats_server: NatsServer, tmp_path: Path
):
    await admin.create_limit("gpu", 1)
    async with client.concurrency("gpu", lease_ttl=3) as lease:
        nats_server.kill()
        await asyncio.sleep(1.0)
        restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
        await asyncio.to_thread(restarted.start)
        try:
            await asyncio.sleep(4)  # longer than the TTL: renewals must have resumed
            assert not lease.lost
            leases = await admin.list_leases("gpu")
            assert [x.lease_id for x in leases] == [lease.lease_id]
        finally:
            nats_server.process = restarted.process


@pytest.mark.postgres
async def test_a_dropped_database_connection_is_retried_without_losing_grants(
    start_coordinator: Callable[..., Any], postgres_url: str, caplog: pytest.LogCaptureFixture
):
    """PostgreSQL restarts or a proxy drops the connection: the commit is retried on a new
    connection and the caller still gets its lease (durable before the reply, as always)."""
    import psycopg

    coordinator = await start_coordinator(db_url=postgres_url)
    settings = ClientSettings(nats_url=coordinator.settings.nats_url)
    async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
        await admin.create_limit("db", 2)
        with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
            dropped = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped is not None and dropped[0] >= 1
        async with client.concurrency("db") as lease:
            assert lease.lease_id is not None
            _, stored = await asyncio.to_thread(coordinator.store.load)
            assert [x.lease_id for x in stored] == [lease.lease_id]
    assert "commit failed (" in caplog.text  # the path under test really ran
