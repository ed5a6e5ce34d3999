"""Failover on real parts: a 3-node NATS cluster, PostgreSQL, three `gcl serve` processes.

Under a light mixed workload the leader is killed (-9), its lock session is terminated, and it
is paused (SIGSTOP) past the timeouts and resumed. Each time exactly one new leader takes over,
no limit is ever over-granted (an interval sweep over what the holders saw), fencing tokens
never repeat or go backwards, no healthy holder loses its lease, every waiter is served, and a
resumed old leader stops without granting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gcl.protocol import CoordinatorStatus
from gcl.sdk import AsyncAdminClient, AsyncClient, ClientSettings, LeaseLost, NatsSettings
from tests.conftest import ROOT, fresh_postgres, pg_conninfo
from tests.support.cluster import NatsCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SLOTS = 2
HOLDERS = 5


class Coordinators:
    """`gcl serve` processes on one database and one NATS cluster; restartable, killable."""

    def __init__(self, folder: Path, nats_url: str, db_url: str) -> None:
        self.folder = folder
        self.nats_url = nats_url
        self.db_url = db_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_one(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "GCL_NATS_URL": self.nats_url,
            "GCL_DB_URL": self.db_url,
            "PYTHONPATH": str(ROOT),
        }
        log = open(self.folder / f"coordinator-{len(self.procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcl.cli", "serve", "--log-level", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.folder.glob("*.log")))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats").start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture
def coordinators(tmp_path: Path, cluster: NatsCluster) -> Iterator[Coordinators]:
    group = Coordinators(tmp_path, cluster.url, fresh_postgres())
    try:
        yield group
    finally:
        group.stop()
        print(group.logs())  # pytest shows it only when the test failed


async def statuses(admin: AsyncAdminClient) -> list[CoordinatorStatus]:
    return await admin.status(window=0.4)


async def one_leader(
    admin: AsyncAdminClient, expect: int, timeout: float = 30, other_than: str = ""
) -> CoordinatorStatus:
    """Wait until `expect` coordinators answer and exactly one of them leads (not
    `other_than`)."""
    deadline = time.monotonic() + timeout
    found: list[CoordinatorStatus] = []
    while time.monotonic() < deadline:
        found = await statuses(admin)
        leaders = [s for s in found if s.role == "leader"]
        if len(found) >= expect and len(leaders) == 1 and leaders[0].coordinator_id != other_than:
            return leaders[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single leader among {expect}: {found}")


@dataclass
class Record:
    """What the holders saw: each grant's interval and fencing token, and any loss."""

    intervals: list[tuple[float, float]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    served: int = 0


async def holder(settings: ClientSettings, record: Record, stop: asyncio.Event) -> None:
    async with AsyncClient(settings) as client:
        while not stop.is_set():
            try:
                async with client.concurrency("ha", lease_ttl=3, timeout_seconds=20) as lease:
                    start = time.monotonic()
                    assert lease.fencing_token is not None
                    record.tokens.append(lease.fencing_token)
                    await asyncio.sleep(0.05)
                    end = time.monotonic()
                record.intervals.append((start, end))
                record.served += 1
            except LeaseLost as exc:
                record.lost.append(str(exc))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def lock_session_pid(coordinator_id: str) -> int:
    import psycopg

    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (f"gcl-lock-{coordinator_id}",),
        ).fetchone()
    assert row is not None, f"no lock session for {coordinator_id}"
    return int(row[0])


def terminate_backend(pid: int) -> None:
    import psycopg

    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@contextlib.asynccontextmanager
async def workload(settings: ClientSettings) -> AsyncIterator[Record]:
    record = Record()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(holder(settings, record, stop)) for _ in range(HOLDERS)]
    try:
        yield record
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # a holder that crashed fails the test here
        assert not pending, "a holder never finished: a waiter was not served"


async def served_more(record: Record, than: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while record.served <= than + 5:
        assert time.monotonic() < deadline, "the workload stopped being served after a fault"
        await asyncio.sleep(0.05)


def pid_of(coordinators: Coordinators, status: CoordinatorStatus) -> subprocess.Popen[bytes]:
    return next(p for p in coordinators.procs if p.pid == status.pid)


async def test_failover_under_load_never_over_grants(
    cluster: NatsCluster, coordinators: Coordinators
) -> None:
    for _ in range(3):
        coordinators.start_one()
    settings = ClientSettings(nats_url=cluster.url, unavailable_timeout=20)
    async with AsyncAdminClient(NatsSettings(nats_url=cluster.url)) as admin:
        first = await one_leader(admin, expect=3)
        await admin.create_limit("ha", SLOTS)
        async with workload(settings) as record:
            await served_more(record, 0)

            # 1. kill -9 the leader
            pid_of(coordinators, first).kill()
            second = await one_leader(admin, expect=2, other_than=first.coordinator_id)
            assert second.coordinator_id != first.coordinator_id
            assert second.epoch is not None and first.epoch is not None
            assert second.epoch > first.epoch
            await served_more(record, record.served)
            coordinators.start_one()  # the supervisor brings a standby back
            await one_leader(admin, expect=3)

            # 2. terminate the leader's lock session
            terminate_backend(lock_session_pid(second.coordinator_id))
            third = await one_leader(admin, expect=2, other_than=second.coordinator_id)
            assert third.coordinator_id != second.coordinator_id
            deposed = pid_of(coordinators, second)
            assert deposed.wait(10) == 4  # it noticed, stepped down and exited "deposed"
            await served_more(record, record.served)
            coordinators.start_one()
            await one_leader(admin, expect=3)

            # 3. pause the leader past the timeouts, then resume it
            paused = pid_of(coordinators, third)
            paused.send_signal(signal.SIGSTOP)
            fourth = await one_leader(admin, expect=2, other_than=third.coordinator_id)
            assert fourth.coordinator_id != third.coordinator_id
            await served_more(record, record.served)
            paused.send_signal(signal.SIGCONT)
            assert paused.wait(10) == 4  # the resumed old leader stops without granting
            await served_more(record, record.served)

    assert record.lost == [], record.lost[:3]
    assert most_at_once(record.intervals) <= SLOTS, "over-granted"
    assert len(record.tokens) == len(set(record.tokens)), "a fencing token was issued twice"
    assert record.served > 20


async def test_the_event_stream_is_replicated_on_a_cluster(
    cluster: NatsCluster, coordinators: Coordinators
) -> None:
    coordinators.start_one()
    async with AsyncAdminClient(NatsSettings(nats_url=cluster.url)) as admin:
        await one_leader(admin, expect=1)
        rpc = await admin._ready()
        # A cluster that has just formed may not place a stream yet ("no suitable peers"):
        # the coordinator then retries in the background, so wait for it (bounded).
        deadline = time.monotonic() + 20
        while True:
            try:
                info = await rpc.nc.jetstream().stream_info("GCL_EVENTS")
                break
            except Exception:
                assert time.monotonic() < deadline, "the event stream was never set up"
                await asyncio.sleep(0.2)
    assert info.config.num_replicas == 3
