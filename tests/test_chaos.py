"""Chaos: the short run of bench/chaos.py, its checks shown to fail, and what it found.

- `test_a_short_chaos_run_keeps_every_invariant`: the same code as `bench/chaos.py`, for ~20 s
  with one fault of each kind, asserting every invariant held.
- The checks of `bench/chaos_checks.py` are run on small made-up histories that break them: a
  checker that cannot fail would prove nothing.
- Tests for the product bugs the chaos run found: a SQLite coordinator quit on a NATS outage
  (fixed); a locked SQLite file froze the coordinator (fixed: commits run on the store's thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import chaos
from bench.chaos_checks import (
    Faults,
    Grant,
    fencing,
    forgotten_at_restart,
    lost_leases,
    over_grants,
    rate_over_grants,
    reported_over_grants,
)
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.protocol import Event, LimitInfo
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.settings import ClientSettings
from tests.conftest import CoordinatorProcess

# --- found by the chaos run -----------------------------------------------------------------


async def test_a_sqlite_coordinator_rides_out_a_nats_outage(
    coordinator: Coordinator, client: AsyncClient, admin: AsyncAdminClient, nats_server: NatsServer
) -> None:
    """NATS down for longer than the leader's `nats_lost_seconds`: a SQLite coordinator has no
    standby that could serve instead, so it must not step down (it used to exit with code 4,
    leaving nobody to serve when NATS came back)."""
    await admin.create_limit("gpu", 1)
    coordinator.leadership.nats_lost_seconds = 0.3  # the default is 2 s: keep the test short
    nats_server.kill()
    await asyncio.sleep(1.2)  # several heartbeats past nats_lost_seconds
    restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
    await asyncio.to_thread(restarted.start)
    try:
        assert coordinator.leading
        async with client.concurrency("gpu", lease_ttl=3, timeout_seconds=10) as lease:
            assert lease.lease_id is not None
    finally:
        nats_server.process = restarted.process


# --- the short run ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    """bench/chaos.py for ~14 s: every fault kind once, then every invariant checked."""
    config = chaos.Config(
        seconds=14.0,
        clients=3,
        tasks=3,
        seed=20261202,
        gap=(1.2, 1.8),
        ttl=(1.0, 2.0),
        hold_max=0.5,
        nats_down=(2.5, 3.0),  # past the 2 s after which a leader without NATS used to quit
        stall=(1.0, 1.5),
        keep=tmp_path / "chaos",
        first_fault_after=1.0,
    )
    report = await chaos.run_chaos(config)
    rendered = report.render()
    assert report.ok, rendered
    assert set(report.numbers["faults"]) == set(chaos.FAULT_KINDS), rendered
    assert report.numbers["concurrency_grants"] >= 20, rendered  # ~90 on a 2-core VM
    assert report.numbers["multi_name_grants"] >= 5, rendered
    assert report.numbers["rate_grants"] >= 3, rendered


# --- the checks can fail ---------------------------------------------------------------------


def _grant(lease_id: str, names: list[str], t_acq: float, t_rel: float | None, **kw: Any) -> Grant:
    fields: dict[str, Any] = {
        "request_id": "r-" + lease_id,
        "occupy": 1,
        "mode": "concurrency",
        "ttl": 5.0,
        "tokens": {},
        "granted_at": t_acq - 0.001,
        "proc": "c0-0",
        "pid": 1,
        "outcome": "released" if t_rel is not None else None,
        "t_done": None if t_rel is None else t_rel + 0.001,
        **kw,
    }
    return Grant(lease_id=lease_id, names=names, t_acq=t_acq, t_rel=t_rel, **fields)


def _info(name: str, limit: int, held: int = 0, token: int = 0) -> LimitInfo:
    return LimitInfo(
        name=name,
        limit=limit,
        active=True,
        slot_decay_per_second=0.0,
        occupied=float(held),
        held=held,
        leases=held,
        waiters=0,
        denied=0,
        avg_occupancy_seconds=0.0,
        fencing_token=token,
        created_at=0.0,
        updated_at=0.0,
    )


def _event(kind: str, at: float, lease_id: str, limits: list[LimitInfo]) -> Event:
    names = [info.name for info in limits]
    return Event(kind=kind, at=at, names=names, lease_id=lease_id, limits=limits)  # type: ignore[arg-type]


def test_the_sweep_finds_overlapping_holders_and_only_them() -> None:
    limits = {"a": 1, "b": 2}
    faults = Faults()
    grants = [
        _grant("1", ["a"], 10.0, 11.0),
        _grant("2", ["a", "b"], 11.0, 12.0),  # starts as 1 ends: half-open, no overlap
        _grant("3", ["b"], 11.5, 13.0, occupy=2),  # b: 1 + 2 > 2
    ]
    check, peaks = over_grants(grants, limits, {}, faults, final=100.0)
    assert check.violations == 1 and "b: 3 > 2" in check.examples[0]
    assert peaks == {"a": 1, "b": 3}
    overlap = [_grant("4", ["a"], 20.0, 22.0), _grant("5", ["a"], 21.0, 23.0)]
    assert over_grants(overlap, limits, {}, faults, 100.0)[0].violations == 1


def test_the_sweep_ends_a_lost_lease_where_the_coordinator_ended_it() -> None:
    """A holder that lost its lease (it expired under it) is no holder after the expiry: the
    next grant is no over-grant. Without an end event, its grant + TTL bounds it."""
    limits = {"a": 1}
    lost = _grant("1", ["a"], 10.0, 30.0, outcome="lost", ttl=2.0)
    after = _grant("2", ["a"], 15.0, 16.0)
    faults = Faults()
    assert over_grants([lost, after], limits, {"1": 14.0}, faults, 100.0)[0].violations == 0
    assert over_grants([lost, after], limits, {}, faults, 100.0)[0].violations == 0
    assert over_grants([lost, after], limits, {"1": 15.5}, faults, 100.0)[0].violations == 1
    killed = _grant("3", ["a"], 40.0, None, ttl=30.0, proc="c1-0")
    during = _grant("4", ["a"], 45.0, 46.0)
    faults.process_ends["c1-0"] = 44.0  # killed holders hold nothing
    assert over_grants([killed, during], limits, {}, faults, 100.0)[0].violations == 0
    faults.process_ends["c1-0"] = 45.5
    assert over_grants([killed, during], limits, {}, faults, 100.0)[0].violations == 1


def test_the_coordinators_own_figures_are_checked() -> None:
    events = [_event("lease.granted", 1.0, "x", [_info("chaos.a", 2, held=3)])]
    assert reported_over_grants(events, "chaos.").violations == 1
    events = [_event("lease.granted", 1.0, "x", [_info("chaos.a", 2, held=2)])]
    assert reported_over_grants(events, "chaos.").violations == 0


def test_rate_over_grants_are_found() -> None:
    burst = {str(i): (100.0 + i * 0.01, 1) for i in range(5)}
    assert rate_over_grants(burst, 4, 2.0).violations >= 1
    paced = {str(i): (100.0 + i * 0.5, 1) for i in range(20)}
    assert rate_over_grants(paced, 4, 2.0).violations == 0


def test_fencing_finds_duplicates_disorder_and_mismatches() -> None:
    faults = Faults(coordinator_kills=[5.0])
    events = [
        _event("lease.granted", 1.0, "1", [_info("chaos.a", 1, token=10)]),
        _event("lease.granted", 2.0, "2", [_info("chaos.a", 1, token=11)]),
        _event("lease.granted", 3.0, "3", [_info("chaos.a", 1, token=11)]),  # duplicate
        _event("lease.granted", 6.0, "4", [_info("chaos.a", 1, token=9)]),  # backwards, restart
    ]
    grants = [_grant("2", ["chaos.a"], 2.0, 2.5, tokens={"chaos.a": 12})]  # client saw another
    check = fencing(grants, events, faults, "chaos.")
    assert "duplicates 1" in check.detail
    assert "within a run 1" in check.detail and "across a restart 1" in check.detail
    assert "mismatches 1" in check.detail
    clean = fencing([], events[:2], faults, "chaos.")
    assert clean.violations == 0
    reversed_by_clients = [
        _grant("5", ["chaos.a"], 7.0, 7.5, tokens={"chaos.a": 30}),
        _grant("6", ["chaos.a"], 8.0, 8.5, tokens={"chaos.a": 29}),  # later grant, lower token
    ]
    assert "within a run 1" in fencing(reversed_by_clients, [], faults, "chaos.").detail


def test_a_lease_live_at_a_kill_must_be_restored() -> None:
    live = _grant("live", ["chaos.a"], 10.0, 14.0, ttl=5.0, outcome="unreachable")  # across 12
    expirable = _grant("old", ["chaos.a"], 5.0, 14.0, ttl=2.0)  # may have expired by 12
    releasing = _grant("gone", ["chaos.a"], 10.0, 11.5)  # its release began before the kill
    grants = [live, expirable, releasing]
    faults = Faults(restores=[(12.0, 12.5, frozenset())])
    check = forgotten_at_restart(grants, {}, faults)
    assert check.violations == 1 and "live" in check.examples[0]
    faults = Faults(restores=[(12.0, 12.5, frozenset({"live"}))])
    assert forgotten_at_restart(grants, {}, faults).violations == 0
    faults = Faults(restores=[(12.0, 12.5, frozenset())])
    assert forgotten_at_restart(grants, {"live": 12.3}, faults).violations == 0  # ended since
    assert forgotten_at_restart(grants, {"live": 11.9}, faults).violations == 1
    released_by_the_new_one = _grant("live", ["chaos.a"], 10.0, 12.2, ttl=5.0)
    assert forgotten_at_restart([released_by_the_new_one], {}, faults).violations == 0


def test_lost_leases_are_told_from_events_lost_in_an_outage() -> None:
    faults = Faults(nats_down=[(50.0, 52.0)])
    events = [
        _event("lease.granted", 10.0, "ended", [_info("chaos.a", 5)]),
        _event("lease.released", 10.5, "ended", [_info("chaos.a", 5)]),
        _event("lease.granted", 20.0, "vanished", [_info("chaos.a", 5)]),
        _event("lease.granted", 51.0, "in-outage", [_info("chaos.a", 5)]),
        _event("lease.granted", 70.0, "leaked", [_info("chaos.a", 5)]),
    ]
    grants = [
        _grant("vanished", ["chaos.a"], 20.1, 20.5),  # released at 20.5: no outage then
        _grant("in-outage", ["chaos.a"], 51.1, 51.5),
        _grant("unrecorded", ["chaos.a"], 30.0, 30.5),  # no lease.granted, no outage
    ]
    check, counts = lost_leases(
        grants, events, ["leaked"], faults, 100.0, frozenset({"chaos.rate"}), 5.0
    )
    assert counts["leaked"] == 1
    assert counts["end_unrecorded"] == 2  # vanished, unrecorded
    assert counts["grant_unrecorded"] == 1
    assert counts["end_events_lost_in_outage"] == 1
    assert check.violations == 4


def test_tracebacks_in_the_coordinator_log_count_but_commit_retries_do_not(
    tmp_path: Path,
) -> None:
    log = tmp_path / "coordinator.log"
    log.write_text(
        "x ERROR gcl.coordinator: commit failed; retrying in 0.05s\n"
        "Traceback (most recent call last):\n"
        '  File "store.py", line 1\n'
        "sqlite3.OperationalError: database is locked\n"
        "x ERROR gcl.coordinator: internal error handling acquire\n"
        "Traceback (most recent call last):\n"
        '  File "engine.py", line 1\n'
        "KeyError: 'x'\n"
    )
    check = chaos.coordinator_log_problems(log)
    assert check.violations == 2  # the internal error line and its traceback
    assert "commit retries during stalls: 1" in check.detail


async def test_a_locked_sqlite_file_does_not_freeze_the_coordinator(
    coordinator_process: Callable[..., CoordinatorProcess], tmp_path: Path
) -> None:
    """Found by the chaos run's db_stall: while another process holds the SQLite write lock,
    a commit waits for it; answers that need no commit (ping, renew) must not wait with it."""
    proc = coordinator_process()
    settings = ClientSettings(nats_url=proc.nats_url, unavailable_timeout=10)
    db_path = proc.db_url.removeprefix("sqlite:///")
    locked = threading.Event()

    def hold_the_lock() -> None:
        conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(1.5)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
        await admin.create_limit("db", 5)
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        try:
            assert await asyncio.to_thread(locked.wait, 5)
            acquire = asyncio.create_task(client.acquire("db", lease_ttl=5, timeout_seconds=20))
            await asyncio.sleep(0.2)  # its commit now waits for the lock
            asked = time.monotonic()
            await admin.ping()
            slowest = time.monotonic() - asked
        finally:
            await asyncio.to_thread(holder.join, 10)
        lease = await acquire
        await client.release(lease)
    assert slowest < 0.5, f"a ping took {slowest:.2f}s while a commit waited for the lock"
