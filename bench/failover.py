"""Failover time: a fault on the leader to the first grant made by the new leader.

    .venv/bin/python bench/failover.py [--repeats 10] [--faults kill,lock,pause]

Runs a 3-node NATS cluster and two `gcl serve` processes (leader and hot standby) on a
PostgreSQL database of its own (`gcl_bench_ha`, on 127.0.0.1:5432, dropped at the end). A probe
client acquires and releases in a loop, noting the wall time of every grant. Each fault is
repeated `--repeats` times; after each the bench plays supervisor and starts a fresh standby.

- kill:  `kill -9` the leader.
- lock:  `pg_terminate_backend` of the leader's lock session.
- pause: `SIGSTOP` the leader (resumed with SIGCONT once a new leader serves).

Failover time = the first probe grant at or after the new leader took the lead, minus the
fault. Grants after the takeover are necessarily the new leader's: the old one is fenced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from gcl.protocol import CoordinatorStatus  # noqa: E402
from gcl.sdk import AsyncAdminClient, AsyncClient, ClientSettings, NatsSettings  # noqa: E402
from gcl.sdk.exceptions import GCLError  # noqa: E402
from tests.support.cluster import NatsCluster  # noqa: E402

DSN = "host=127.0.0.1 port=5432 user=postgres connect_timeout=3"
DATABASE = "gcl_bench_ha"


def fresh_database() -> str:
    import psycopg

    with psycopg.connect(f"{DSN} dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"


def drop_database() -> None:
    import psycopg

    with psycopg.connect(f"{DSN} dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def terminate_lock_session(coordinator_id: str) -> None:
    import psycopg

    with psycopg.connect(f"{DSN} dbname={DATABASE}", autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"gcl-lock-{coordinator_id}",),
        )


class Group:
    """The coordinator processes; the bench restarts them as a supervisor would."""

    def __init__(self, folder: Path, nats_url: str, db_url: str) -> None:
        self.folder, self.nats_url, self.db_url = folder, nats_url, db_url
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        env = {**os.environ, "GCL_NATS_URL": self.nats_url, "GCL_DB_URL": self.db_url}
        env["PYTHONPATH"] = str(ROOT)
        log = open(self.folder / "coordinators.log", "ab")  # noqa: SIM115 - children own it
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcl.cli", "serve"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        log.close()
        self.procs[proc.pid] = proc

    def reap(self) -> None:
        for pid, proc in list(self.procs.items()):
            if proc.poll() is not None:
                del self.procs[pid]

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def leader(admin: AsyncAdminClient, expect: int, timeout: float = 30) -> CoordinatorStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await admin.status(window=0.3)
        leaders = [s for s in found if s.role == "leader"]
        if len(found) >= expect and len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no single leader among {expect} coordinators")


async def probe(settings: ClientSettings, grants: list[float], stop: asyncio.Event) -> None:
    async with AsyncClient(settings) as client:
        while not stop.is_set():
            try:
                async with client.concurrency("bench.ha", lease_ttl=5, timeout_seconds=20):
                    grants.append(time.time())
            except GCLError:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.005)


async def one_fault(
    fault: str, group: Group, admin: AsyncAdminClient, grants: list[float]
) -> float:
    old = await leader(admin, expect=2)
    proc = group.procs[old.pid]
    at = time.time()
    if fault == "kill":
        proc.kill()
    elif fault == "lock":
        await asyncio.to_thread(terminate_lock_session, old.coordinator_id)
    elif fault == "pause":
        proc.send_signal(signal.SIGSTOP)
    new = await leader(admin, expect=1)
    while new.coordinator_id == old.coordinator_id:
        new = await leader(admin, expect=1)
    deadline = time.monotonic() + 20
    while not any(g >= new.since for g in grants):
        if time.monotonic() > deadline:
            raise RuntimeError("the new leader granted nothing within 20 s")
        await asyncio.sleep(0.01)
    first = min(g for g in grants if g >= new.since)
    if fault == "pause":
        proc.send_signal(signal.SIGCONT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    if proc.poll() is None:
        proc.kill()
    group.reap()
    group.start()  # a fresh standby
    await leader(admin, expect=2)
    return first - at


async def main(faults: list[str], repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="gcl-failover-") as tmp:
        folder = Path(tmp)
        cluster = NatsCluster(folder / "nats").start()
        group = Group(folder, cluster.url, fresh_database())
        try:
            group.start()
            group.start()
            settings = ClientSettings(nats_url=cluster.url, unavailable_timeout=30)
            async with AsyncAdminClient(NatsSettings(nats_url=cluster.url)) as admin:
                await leader(admin, expect=2)
                await admin.create_limit("bench.ha", 1000)
                grants: list[float] = []
                stop = asyncio.Event()
                task = asyncio.create_task(probe(settings, grants, stop))
                try:
                    for fault in faults:
                        times = [
                            await one_fault(fault, group, admin, grants) for _ in range(repeats)
                        ]
                        print(
                            f"{fault:5}  n={len(times)}  p50 {statistics.median(times):.3f} s  "
                            f"max {max(times):.3f} s  min {min(times):.3f} s"
                        )
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 30)
        except BaseException:
            print((folder / "coordinators.log").read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            group.stop()
            cluster.stop()
            drop_database()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--faults", default="kill,lock,pause")
    args = parser.parse_args()
    asyncio.run(main(args.faults.split(","), args.repeats))
