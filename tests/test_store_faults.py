"""A stalled or failing database: only commits wait; health says so; nothing is revealed early.

The fault is real: another process holds SQLite's write lock (`BEGIN IMMEDIATE`), as a backup
job or a stray `sqlite3` shell would. Bounds on timings are generous (seconds for what takes
milliseconds): they prove "not frozen", not speed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.coordinator.service import Coordinator
from gcl.protocol import RENEW, LeaseRef
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.settings import ClientSettings
from tests.conftest import wait_until
from tests.support.sqlite_lock import ForeignWriter, sqlite_path

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
                renewed, took = await timed(rpc.call(RENEW, LeaseRef(lease_id=held.lease_id)))
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
