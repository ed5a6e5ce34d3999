"""A stalled or failing database: only commits wait; health says so; nothing is revealed early.

The fault is real: another process holds SQLite's write lock (`BEGIN IMMEDIATE`), as a backup
job or a stray `sqlite3` shell would. Bounds on timings are generous (seconds for what takes
milliseconds): they prove "not frozen", not speed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.coordinator.service import Coordinator
from gcl.protocol import RELEASE, RENEW, HeldLease
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import CoordinatorUnavailable, StorageError
from gcl.sdk.settings import ClientSettings
from tests.conftest import wait_until
from tests.support.sqlite_lock import ForeignWriter, sqlite_path
from tests.test_cli import gcl

FAST = 3.0  # "answers at once" on a loaded 2-core machine: it takes ~1 ms


def stored_lease_ids(db_url: str) -> set[str]:
    """Read the leases table from outside, as a restarted coordinator would find it."""
    with sqlite3.connect(sqlite_path(db_url), timeout=10) as conn:
        return {row[0] for row in conn.execute("SELECT lease_id FROM gcl_leases")}


def scrape(coordinator: Coordinator) -> dict[str, float]:
    """Unlabelled samples of the scrape (the service's own figures), by sample name."""
    assert coordinator.metrics is not None
    with urllib.request.urlopen(coordinator.metrics.url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{v}" for v in sample.labels.values())
            samples[key] = sample.value
    return samples


async def timed(awaitable: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


async def test_a_foreign_lock_delays_only_commits(
    nats_server: NatsServer,
    start_coordinator: Callable[..., Any],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While another process holds the write lock: ping, renew and release of committed leases
    answer at once; an acquire is granted only after the lock is gone, and its lease is on
    disk by the time the caller has it. The stall shows in the metrics and the log."""
    coordinator: Coordinator = await start_coordinator(
        store_stall_seconds=60, metrics_port=free_port()
    )
    settings = ClientSettings(nats_url=nats_server.url, unavailable_timeout=60)
    async with (
        AsyncAdminClient(settings) as admin,
        AsyncClient(settings) as holder,
        AsyncClient(settings) as other,
    ):
        await admin.create_limit("disk", 5)
        held = await holder.acquire("disk", lease_ttl=60)
        spare = await holder.acquire("disk", lease_ttl=60)
        rpc = await holder._ready()
        with ForeignWriter(sqlite_url):
            locked_at = time.monotonic()
            wanted = asyncio.create_task(other.acquire("disk", lease_ttl=60))
            await wait_until(lambda: coordinator.store_health().uncommitted_seconds > 0.2)
            while time.monotonic() - locked_at < 3.0:  # three seconds of a held lock
                pong, took = await timed(admin.ping())
                assert took < FAST and pong.coordinator_id == coordinator.id
                renewed, took = await timed(
                    rpc.call(RENEW, HeldLease(lease_id=held.lease_id, secret=held.secret))
                )
                assert took < FAST and renewed.expires_in == 60
                await asyncio.sleep(0.3)
            _, took = await timed(holder.release(spare))
            assert took < FAST and not spare.lost
            stalled = await asyncio.to_thread(scrape, coordinator)
            assert stalled["gcl_store_uncommitted_seconds"] > 2.0
            assert stalled["gcl_store_healthy"] == 1.0  # below store_stall_seconds
            assert not wanted.done(), "a grant was revealed before its commit"
            assert len(stored_lease_ids(sqlite_url)) == 2  # (readers are not blocked)
        lease = await asyncio.wait_for(wanted, 30)
        assert lease.lease_id in stored_lease_ids(sqlite_url)  # durable before revealed
        await wait_until(lambda: spare.lease_id not in stored_lease_ids(sqlite_url))  # next commit
        after = await asyncio.to_thread(scrape, coordinator)
        assert after["gcl_store_uncommitted_seconds"] == 0.0
        slow = after["gcl_commit_seconds_count"] - after["gcl_commit_seconds_bucket|2.5"]
        assert slow >= 1, "the stalled commit is not in gcl_commit_seconds"
        await holder.release(held)
        await other.release(lease)
    assert "a commit took" in caplog.text and "locked or slow" in caplog.text


async def test_health_reports_a_stalled_store_and_recovers(
    nats_server: NatsServer,
    start_coordinator: Callable[..., Any],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past store_stall_seconds, ping says the store is unhealthy and why (`gcl ping` exits 3);
    renew and release are applied but answered `unavailable`. When the lock goes, the change
    commits, health comes back and so does `gcl ping`'s exit 0."""
    coordinator: Coordinator = await start_coordinator(
        store_stall_seconds=1, metrics_port=free_port()
    )
    settings = ClientSettings(nats_url=nats_server.url, unavailable_timeout=60)
    patient = ClientSettings(nats_url=nats_server.url, request_timeout=60)
    async with (
        AsyncAdminClient(settings) as admin,
        AsyncAdminClient(patient) as writer,
        AsyncClient(settings) as holder,
    ):
        await admin.create_limit("disk", 5)
        held = await holder.acquire("disk", lease_ttl=60)
        spare = await holder.acquire("disk", lease_ttl=60)
        rpc = await holder._ready()
        assert (await admin.ping()).store.healthy
        assert (await gcl(nats_server, "ping")).code == 0
        with ForeignWriter(sqlite_url):
            created = asyncio.create_task(writer.create_limit("made-while-locked", 1))
            await wait_until(lambda: not coordinator.store_health().healthy, timeout=15)
            pong = await admin.ping()
            assert not pong.store.healthy and pong.store.uncommitted_seconds > 1
            assert pong.store.problem and "locked or slow" in pong.store.problem
            outcome = await gcl(nats_server, "ping")
            assert outcome.code == 3, outcome
            assert "database is unhealthy" in outcome.err and "locked or slow" in outcome.err
            with pytest.raises(CoordinatorUnavailable, match="renewal not confirmed"):
                await rpc.call(RENEW, HeldLease(lease_id=held.lease_id, secret=held.secret))
            with pytest.raises(CoordinatorUnavailable, match="release not confirmed"):
                await rpc.call(RELEASE, HeldLease(lease_id=spare.lease_id, secret=spare.secret))
            assert (await asyncio.to_thread(scrape, coordinator))["gcl_store_healthy"] == 0.0
            assert not created.done()
        await asyncio.wait_for(created, 30)
        await wait_until(lambda: coordinator.store_health().healthy, timeout=15)
        assert (await admin.ping()).store.healthy
        assert (await gcl(nats_server, "ping")).code == 0
        renewed = await rpc.call(RENEW, HeldLease(lease_id=held.lease_id, secret=held.secret))
        assert renewed.expires_in == 60
        # the release was applied in memory while unconfirmed, and rode the next commit
        await wait_until(lambda: spare.lease_id not in stored_lease_ids(sqlite_url))
        assert (await admin.get_limit("disk")).limit.held == 1
        await holder.release(held)
    assert "the database is unhealthy" in caplog.text
    assert "committing again" in caplog.text


async def test_failing_commits_are_named_in_the_health_reply(
    nats_server: NatsServer,
    start_coordinator: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit that fails at once (disk full, I/O error) is retried; past the threshold ping
    names the error; once commits succeed again, the retried change lands."""
    coordinator: Coordinator = await start_coordinator(store_stall_seconds=0.5)
    real_apply = coordinator.store.apply

    def disk_full(changes: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    patient = ClientSettings(nats_url=nats_server.url, request_timeout=60)
    async with AsyncAdminClient(patient) as admin:
        monkeypatch.setattr(coordinator.store, "apply", disk_full)
        created = asyncio.create_task(admin.create_limit("while-full", 1))
        await wait_until(lambda: not coordinator.store_health().healthy, timeout=15)
        pong = await admin.ping()
        assert pong.store.problem is not None
        assert "commits are failing (OperationalError: database or disk is full)" in (
            pong.store.problem
        )
        assert coordinator.stats.commit_failures >= 1
        monkeypatch.setattr(coordinator.store, "apply", real_apply)
        info = await asyncio.wait_for(created, 30)
        assert info.name == "while-full"
        assert (await admin.ping()).store.healthy


async def test_a_commit_that_never_returns_still_ends_in_exit_3(
    nats_server: NatsServer,
    start_coordinator: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit stuck in the driver (a PostgreSQL connection cut without a reset) must not
    outlive db_retry_seconds: the coordinator gives up as for failing commits."""
    coordinator: Coordinator = await start_coordinator(db_retry_seconds=1)
    stuck = threading.Event()

    def hang(changes: Any) -> None:
        stuck.wait(30)  # bounded; set at the end of the test to free the store thread

    monkeypatch.setattr(coordinator.store, "apply", hang)
    try:
        settings = ClientSettings(nats_url=nats_server.url, request_timeout=0.5)
        async with AsyncAdminClient(settings) as admin:
            with pytest.raises(CoordinatorUnavailable):
                await admin.create_limit("never-committed", 1)
        with pytest.raises(StorageError, match=r"kept failing.*did not return"):
            await asyncio.wait_for(coordinator.failed(), 15)
    finally:
        stuck.set()
