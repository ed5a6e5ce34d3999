"""Chaos: a mixed workload for a few minutes while faults are injected, then the invariants.

    .venv/bin/python bench/chaos.py [--seconds 180] [--seed N] [--clients 4] [--tasks 4]
        [--faults holder_kill,coordinator_kill,nats_restart,db_stall,spray] [--keep DIR]

Starts its own nats-server (JetStream on, loopback) and `python -m gcl.cli serve` on a SQLite
file, creates four limits (`chaos.one` of 1, `chaos.two` of 2, `chaos.five` of 5, and
`chaos.rate` of 4 slots draining at 2/s), and runs `--clients` client processes
(multiprocessing spawn), each with `--tasks` concurrent tasks that loop:

- concurrency acquires of 1-3 of the three concurrency limits in a random order, `occupy` 2
  now and then, TTLs of 1-5 s, acquire timeouts of 0 s (try once) to 8 s, or an acquire
  cancelled after a random few milliseconds; short holds (some longer than a renewal period,
  a few around the TTL), then a release whose outcome is noted;
- rate acquires on `chaos.rate`.

Every grant a client sees is written to its JSONL log at once (lease id, names, fencing tokens,
the coordinator's `granted_at`, `time.time()` right after acquire returned), and its release
(right before it, when it returned, and what the coordinator said).

Meanwhile, at random intervals, one fault at a time:

- holder_kill: SIGKILL a client process (a new one takes its place);
- coordinator_kill: kill -9 the coordinator, restart it on the same database;
- nats_restart: stop NATS (SIGTERM or SIGKILL, alternately) for 1-4 s, restart it on the same
  port and JetStream store folder;
- db_stall: another process holds `BEGIN IMMEDIATE` on the SQLite file for 1-4 s;
- spray: malformed and oversized messages at every request subject from a raw nats-py
  connection (and the same without a reply subject), then a ping.

At the end it stops the clients, waits out the longest TTL, lists the leases the coordinator
still holds, reads the event stream, stops the coordinator, and checks (bench/chaos_checks.py):
no over-grant (holders' intervals, the coordinator's own figures, the rate), no duplicate or
backward fencing token, no lease forgotten by a restart, no lost lease, no coordinator exit it
did not cause, no traceback in its log, an answer to every malformed request. It prints the
faults and the counts, and exits 1 if any invariant was violated (the work folder is then kept
and named).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts bench/ first on the path, where `bench` would mean this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.errors import NoRespondersError  # noqa: E402
from nats.errors import TimeoutError as NatsTimeout  # noqa: E402

from bench import chaos_checks as checks  # noqa: E402
from gcl.coordinator.nats_server import NatsServer, die_with_parent  # noqa: E402
from gcl.protocol import OPERATIONS, RELEASE, Event, HeldLease, Subjects  # noqa: E402
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402
from gcl.sdk.client import AsyncClient  # noqa: E402
from gcl.sdk.events import events  # noqa: E402
from gcl.sdk.exceptions import (  # noqa: E402
    CoordinatorUnavailable,
    GCLError,
    LeaseLost,
    LeaseNotFound,
)
from gcl.sdk.leases import Lease  # noqa: E402
from gcl.sdk.renewer import close_all, renewer_for  # noqa: E402
from gcl.sdk.settings import ClientSettings, NatsSettings  # noqa: E402
from gcl.sdk.transport import Rpc, connect  # noqa: E402

PREFIX = "gcl"
NAMESPACE = "chaos."
LIMITS = {"chaos.one": 1, "chaos.two": 2, "chaos.five": 5}
RATE_NAME, RATE_LIMIT, RATE_PER_SECOND = "chaos.rate", 4, 2.0
FAULT_KINDS = ("holder_kill", "coordinator_kill", "nats_restart", "db_stall", "spray")
UNAVAILABLE = 10.0  # the SDK's default: how long a client retries a silent coordinator
ATTEMPT = 0.3  # one try of a release
STOP_GRACE = 45.0  # for client processes to finish their current operation after the stop
READY_TIMEOUT = 60.0  # spawned processes import gcl on a loaded 2-core machine
COORDINATOR_READY = 30.0


@dataclass(frozen=True)
class Config:
    seconds: float = 180.0
    clients: int = 4
    tasks: int = 4
    seed: int = 0
    faults: tuple[str, ...] = FAULT_KINDS
    gap: tuple[float, float] = (5.0, 12.0)  # seconds between faults
    ttl: tuple[float, float] = (1.0, 5.0)
    hold_max: float = 1.0
    nats_down: tuple[float, float] = (1.0, 4.0)
    stall: tuple[float, float] = (1.0, 4.0)
    keep: Path | None = None  # keep the work folder there (always kept on a violation)
    first_fault_after: float = 3.0


# --- the client processes ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientJob:
    """What one client process does; `name` tells its JSONL log apart."""

    nats_url: str
    slot: int
    generation: int
    folder: str
    stop_path: str
    hard_stop: float  # wall time: give up whatever happens (the parent failed to stop us)
    tasks: int
    seed: int
    ttl: tuple[float, float]
    hold_max: float
    parent: int  # the chaos process: if it dies, stop

    @property
    def name(self) -> str:
        return f"c{self.slot}-{self.generation}"


def run_client(job: ClientJob) -> None:
    """Process entry (multiprocessing spawn)."""
    folder = Path(job.folder)
    logging.basicConfig(
        filename=folder / f"{job.name}.log",
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_client(job))


class ClientLog:
    """One JSON object per line, each written with one write(): a SIGKILL loses no line."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.file.close()


@dataclass
class _Ctx:
    job: ClientJob
    client: AsyncClient
    rpc: Rpc
    log: ClientLog
    settings: ClientSettings

    def stopping(self) -> bool:
        return (
            os.path.exists(self.job.stop_path)
            or time.time() > self.job.hard_stop
            or os.getppid() != self.job.parent
        )


async def _client(job: ClientJob) -> None:
    settings = ClientSettings(nats_url=job.nats_url, unavailable_timeout=UNAVAILABLE)
    out = ClientLog(Path(job.folder) / f"{job.name}.jsonl")
    nc = None
    deadline = time.monotonic() + READY_TIMEOUT
    while nc is None:  # a holder restarted while NATS is down waits for it
        try:
            nc = await connect(settings, f"gcl-chaos-{job.name}")
        except CoordinatorUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    client = AsyncClient(settings, worker_id=f"chaos-{job.slot}", label=job.name, nc=nc)
    ctx = _Ctx(job, client, Rpc(nc, settings), out, settings)
    out.write(kind="ready", t=time.time(), pid=os.getpid())
    try:
        await asyncio.gather(*(_worker(ctx, job.seed * 100 + i) for i in range(job.tasks)))
    finally:
        out.write(kind="exit", t=time.time(), pid=os.getpid())
        await client.aclose()
        with contextlib.suppress(Exception):
            await nc.close()
        close_all()
        out.close()


async def _worker(ctx: _Ctx, seed: int) -> None:
    rng = random.Random(seed)
    while not ctx.stopping():
        try:
            if rng.random() < 0.12:
                await _rate_once(ctx, rng)
            else:
                await _hold_once(ctx, rng)
        except GCLError as exc:
            ctx.log.write(kind="fail", error=type(exc).__name__)
            if isinstance(exc, CoordinatorUnavailable):
                await asyncio.sleep(0.2)
        except Exception as exc:  # not the SDK's own: worth a look
            ctx.log.write(kind="unexpected", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(0.2)
        await asyncio.sleep(rng.uniform(0, 0.03))


def _grant_record(ctx: _Ctx, lease: Lease, t_acq: float) -> dict[str, Any]:
    info = lease.info
    assert info is not None
    return {
        "kind": "grant",
        "lease_id": info.lease_id,
        "request_id": info.request_id,
        "names": list(info.names),
        "occupy": info.occupy,
        "mode": info.mode,
        "ttl": info.ttl,
        "tokens": dict(info.fencing_tokens),
        "granted_at": info.granted_at,
        "t_acq": t_acq,
        "proc": ctx.job.name,
        "pid": os.getpid(),
    }


async def _rate_once(ctx: _Ctx, rng: random.Random) -> None:
    timeout = rng.choice((0.0, 0.5, 2.0))
    lease = await ctx.client.acquire([RATE_NAME], 1, timeout, mode="rate")
    ctx.log.write(**_grant_record(ctx, lease, time.time()))


async def _hold_once(ctx: _Ctx, rng: random.Random) -> None:
    # One name mostly (the one-slot limit least often, or it throttles everything), else two
    # or three in a random order.
    count = rng.choices((1, 2, 3), weights=(55, 30, 15))[0]
    if count == 1:
        names = rng.choices(sorted(LIMITS), weights=(40, 20, 40))  # five, one, two
    else:
        names = rng.sample(sorted(LIMITS), count)
    small = {"chaos.two", "chaos.five"}
    occupy = 2 if set(names) <= small and rng.random() < 0.25 else 1
    ttl = round(rng.uniform(*ctx.job.ttl), 2)
    if rng.random() < 0.15:
        lease = await _cancelled_acquire(ctx, names, occupy, ttl, rng.uniform(0.002, 0.4))
        if lease is None:
            return
    else:
        timeout = rng.choice((0.0, 0.2, 1.0, 3.0, 8.0))
        lease = await ctx.client.acquire(names, occupy, timeout, lease_ttl=ttl)
    t_acq = time.time()
    ctx.log.write(**_grant_record(ctx, lease, t_acq))
    roll = rng.random()
    if roll < 0.75:
        hold = rng.uniform(0.0, 0.1)
    elif roll < 0.96:
        hold = rng.uniform(0.1, ctx.job.hold_max)
    else:
        hold = min(rng.uniform(0.5, 1.5) * ttl, 4.0)  # around the TTL: renewals must carry it
    renewer = renewer_for(ctx.settings)
    renewer.track(lease)
    try:
        await asyncio.sleep(hold)
    finally:
        renewer.untrack(lease)
        t_rel = time.time()
        outcome = await _release(ctx, lease, rng)
        ctx.log.write(
            kind="release",
            lease_id=lease.lease_id,
            t_rel=t_rel,
            t_done=time.time(),
            outcome=outcome,
        )


async def _cancelled_acquire(
    ctx: _Ctx, names: list[str], occupy: int, ttl: float, after: float
) -> Lease | None:
    """An acquire whose caller gives up: cancelled after `after` seconds unless granted."""
    task = asyncio.create_task(ctx.client.acquire(names, occupy, None, lease_ttl=ttl))
    done, _ = await asyncio.wait({task}, timeout=after)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=UNAVAILABLE + 5)
    if not task.done():
        raise RuntimeError("a cancelled acquire did not finish within its bound")
    if task.cancelled():
        ctx.log.write(kind="fail", error="cancelled")
        return None
    return task.result()  # granted before the cancel landed (or raises its error)


async def _release(ctx: _Ctx, lease: Lease, rng: random.Random) -> str:
    """Release, retrying a silent coordinator as the SDK does, and say what the answer was."""
    assert lease.info is not None
    held = HeldLease(lease_id=lease.info.lease_id, secret=lease.secret)
    give_up = time.monotonic() + UNAVAILABLE
    for attempt in itertools.count():
        try:
            result = await ctx.rpc.call(RELEASE, held, timeout=ATTEMPT)
        except LeaseLost:
            return "lost"
        except LeaseNotFound:
            return "not_found"
        except CoordinatorUnavailable:
            if time.monotonic() > give_up:
                return "unreachable"
            await asyncio.sleep(rng.uniform(0.05, 0.25))
            continue
        except GCLError as exc:
            return f"error:{type(exc).__name__}"
        # released=False: it had been released already, which only our earlier try can have
        # done (its answer was lost); on the first try it means someone else ended it.
        return "released" if result.released or attempt > 0 else "already"
    raise AssertionError("unreachable")


# --- the system under test -----------------------------------------------------------------


class CoordinatorProcess:
    """`python -m gcl.cli serve` on our NATS and SQLite file; killed and restarted at will."""

    def __init__(self, folder: Path, nats_url: str, db_path: Path) -> None:
        self.folder = folder
        self.nats_url = nats_url
        self.db_path = db_path
        self.log_path = folder / "coordinator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = asyncio.Lock()  # one of: the fault script, the crash monitor
        self.unexpected_exits: list[tuple[float, int | None]] = []
        self.launches = 0

    def launch(self) -> None:
        env = {
            **os.environ,
            "GCL_NATS_URL": self.nats_url,
            "GCL_DB_URL": f"sqlite:///{self.db_path}",
            "PYTHONPATH": str(ROOT),
        }
        with open(self.log_path, "ab") as out:
            out.write(f"=== launch {self.launches} at {time.time():.3f}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gcl.cli", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=die_with_parent,  # a killed chaos run leaves no coordinator behind
            )
        self.launches += 1

    async def wait_ready(self, admin: AsyncAdminClient) -> float:
        deadline = time.monotonic() + COORDINATOR_READY
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the coordinator exited at start: {self.log_tail()}")
            try:
                await admin.ping()
                return time.time()
            except GCLError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the coordinator did not answer within {COORDINATOR_READY}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> float:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return time.time()

    def stop(self) -> int | None:
        """SIGTERM (a clean stop); its exit code, or None if it had to be killed."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class ClientProcesses:
    """The client processes by slot; a killed one is replaced by the next generation."""

    def __init__(self, config: Config, folder: Path, nats_url: str, hard_stop: float) -> None:
        self.config = config
        self.folder = folder
        self.nats_url = nats_url
        self.stop_path = folder / "STOP"
        self.hard_stop = hard_stop
        self.mp = multiprocessing.get_context("spawn")
        self.running: dict[int, tuple[ClientJob, Any]] = {}
        self.ended: dict[str, float] = {}  # name -> when it was killed or seen gone
        self.killed: set[str] = set()
        self.exit_codes: dict[str, int | None] = {}
        self.generations: Counter[int] = Counter()
        self.lock = threading.Lock()  # the monitor (loop) and stop_all (a thread) both reap

    def start(self, slot: int) -> ClientJob:
        generation = self.generations[slot]
        self.generations[slot] += 1
        job = ClientJob(
            nats_url=self.nats_url,
            slot=slot,
            generation=generation,
            folder=str(self.folder),
            stop_path=str(self.stop_path),
            hard_stop=self.hard_stop,
            tasks=self.config.tasks,
            seed=self.config.seed * 1000 + slot * 50 + generation,
            ttl=self.config.ttl,
            hold_max=self.config.hold_max,
            parent=os.getpid(),
        )
        process = self.mp.Process(target=run_client, args=(job,), name=job.name)
        process.start()
        self.running[slot] = (job, process)
        return job

    def ready(self, job: ClientJob) -> bool:
        path = self.folder / f"{job.name}.jsonl"
        return path.exists() and '"kind":"ready"' in path.read_text(errors="replace")[:400]

    def kill(self, slot: int) -> str:
        with self.lock:
            job, process = self.running.pop(slot)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(10)
        self.ended[job.name] = time.time()
        self.killed.add(job.name)
        self.exit_codes[job.name] = process.exitcode
        return job.name

    def reap(self) -> list[str]:
        """Processes that ended on their own (they should not, before the stop)."""
        gone: list[str] = []
        with self.lock:
            if self.stop_path.exists():
                return gone  # stop_all() accounts for them now
            for slot, (job, process) in list(self.running.items()):
                if not process.is_alive():
                    process.join(1)
                    del self.running[slot]
                    self.ended[job.name] = time.time()
                    self.exit_codes[job.name] = process.exitcode
                    gone.append(job.name)
        return gone

    def stop_all(self) -> None:
        """Ask every process to stop after its current operations; kill those that do not."""
        with self.lock:
            self.stop_path.touch()
        deadline = time.monotonic() + STOP_GRACE
        for slot, (job, process) in list(self.running.items()):
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                self.kill(slot)
                continue
            with self.lock:
                self.running.pop(slot, None)
                self.ended[job.name] = _exit_time(self.folder / f"{job.name}.jsonl") or time.time()
                self.exit_codes[job.name] = process.exitcode

    def kill_all(self) -> None:
        for slot in list(self.running):
            self.kill(slot)


def _exit_time(path: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
        last = path.read_text().strip().splitlines()[-1]
        record = json.loads(last)
        if record["kind"] == "exit":
            return float(record["t"])
    return None


# --- faults --------------------------------------------------------------------------------

STALL_SCRIPT = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=20, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", time.time(), flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("unlocked", time.time(), flush=True)
"""


@dataclass
class FaultLog:
    """Faults injected: counts, details, and the windows the checks need."""

    counts: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    windows: checks.Faults = field(default_factory=checks.Faults)
    spray: Counter[str] = field(default_factory=Counter)

    def note(self, kind: str, start: float, text: str) -> None:
        self.counts[kind] += 1
        self.lines.append(f"{start:.3f} {kind}: {text}")


class Chaos:
    """The system, its clients, and the fault script."""

    def __init__(self, config: Config, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.rng = random.Random(config.seed)
        self.nats = NatsServer(folder / "nats")
        self.db_path = folder / "gcl.db"
        self.coordinator: CoordinatorProcess | None = None
        self.clients: ClientProcesses | None = None
        self.faults = FaultLog()
        self.nats_kills = 0

    @property
    def url(self) -> str:
        return self.nats.url

    # the faults, one at a time --------------------------------------------------------------

    async def holder_kill(self, admin: AsyncAdminClient) -> None:
        assert self.clients is not None
        if not self.clients.running:
            return
        slot = self.rng.choice(sorted(self.clients.running))
        start = time.time()
        name = self.clients.kill(slot)
        job = self.clients.start(slot)
        self.faults.note("holder_kill", start, f"SIGKILL {name}; {job.name} started")

    async def coordinator_kill(self, admin: AsyncAdminClient) -> None:
        coordinator = self.coordinator
        assert coordinator is not None
        async with coordinator.lock:
            if not coordinator.alive():
                return  # the monitor will see it, count it and restart it
            killed = coordinator.kill()
            ready = await self.relaunch(admin, killed)
        self.faults.note(
            "coordinator_kill", killed, f"kill -9; serving again {ready - killed:.2f}s later"
        )

    async def nats_restart(self, admin: AsyncAdminClient) -> None:
        down = self.rng.uniform(*self.config.nats_down)
        how = "SIGKILL" if self.nats_kills % 2 else "SIGTERM"
        self.nats_kills += 1
        start = time.time()
        await asyncio.to_thread(self.nats.kill if how == "SIGKILL" else self.nats.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.nats.start)
        up = time.time()
        self.faults.windows.nats_down.append((start, up))
        self.faults.note("nats_restart", start, f"{how}, listening again {up - start:.2f}s later")

    async def db_stall(self, admin: AsyncAdminClient) -> None:
        seconds = self.rng.uniform(*self.config.stall)
        start = time.time()
        stalled = asyncio.ensure_future(asyncio.to_thread(self._stall, seconds))
        slowest = await _probe(admin, stalled)  # a ping waits for no commit: how slow is it?
        locked, unlocked = await stalled
        self.faults.windows.stalls.append((locked, unlocked))
        self.faults.note(
            "db_stall",
            start,
            f"BEGIN IMMEDIATE held {unlocked - locked:.2f}s by another process; "
            f"slowest ping meanwhile {slowest:.2f}s",
        )

    def _stall(self, seconds: float) -> tuple[float, float]:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALL_SCRIPT, str(self.db_path), f"{seconds:.3f}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        times = dict(line.split()[:2] for line in out.splitlines() if line[:2] in ("lo", "un"))
        if "locked" not in times or "unlocked" not in times:
            raise RuntimeError(f"the stall process failed: {out[-1000:]}")
        return float(times["locked"]), float(times["unlocked"])

    async def spray(self, admin: AsyncAdminClient) -> None:
        start = time.time()
        counts = await spray(self.url)
        self.faults.spray.update(counts)
        answered = True
        try:
            await admin.ping()
        except GCLError:
            answered = False
            self.faults.spray["ping_after_unanswered"] += 1
        self.faults.note(
            "spray",
            start,
            f"{counts['requests']} requests, {counts['refused']} refused, "
            f"{counts['accepted']} accepted (harmless reads), {counts['unanswered']} unanswered, "
            f"{counts['published']} without reply subject; ping after: "
            f"{'answered' if answered else 'UNANSWERED'}",
        )

    # the run ----------------------------------------------------------------------------------

    async def relaunch(self, admin: AsyncAdminClient, killed: float) -> float:
        """Start the coordinator again until it serves, as a supervisor would (bounded); note
        what it restored."""
        coordinator = self.coordinator
        assert coordinator is not None
        windows = self.faults.windows
        windows.coordinator_kills.append(killed)  # events of its last moments may be lost
        deadline = time.monotonic() + 2 * COORDINATOR_READY
        while True:
            coordinator.launch()
            try:
                ready = await coordinator.wait_ready(admin)
                break
            except RuntimeError:
                coordinator.stop()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        windows.coordinator_starts.append(ready)
        restored = await _retry(lambda: admin.list_leases())
        windows.restores.append((killed, ready, frozenset(x.lease_id for x in restored)))
        return ready

    async def monitor(self, admin: AsyncAdminClient, stop: asyncio.Event) -> None:
        """A coordinator that exits by itself is a crash: count it, keep the run going."""
        coordinator = self.coordinator
        assert coordinator is not None
        while not stop.is_set():
            async with coordinator.lock:
                if coordinator.process is not None and coordinator.process.poll() is not None:
                    at = time.time()
                    coordinator.unexpected_exits.append((at, coordinator.process.returncode))
                    await self.relaunch(admin, at)
            assert self.clients is not None
            for name in self.clients.reap():
                self.faults.lines.append(f"{time.time():.3f} client {name} exited by itself")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def run(self) -> Report:
        config = self.config
        began = time.time()
        self.nats.start()
        coordinator = self.coordinator = CoordinatorProcess(self.folder, self.url, self.db_path)
        settings = NatsSettings(nats_url=self.url, request_timeout=2.0)
        coordinator.launch()
        async with AsyncAdminClient(settings) as admin:
            self.faults.windows.coordinator_starts.append(await coordinator.wait_ready(admin))
            for name, size in LIMITS.items():
                await admin.create_limit(name, size)
            await admin.create_limit(RATE_NAME, RATE_LIMIT, slot_decay_per_second=RATE_PER_SECOND)
            hard_stop = time.time() + config.seconds + READY_TIMEOUT + 4 * STOP_GRACE
            clients = self.clients = ClientProcesses(config, self.folder, self.url, hard_stop)
            jobs = [clients.start(slot) for slot in range(config.clients)]
            deadline = time.monotonic() + READY_TIMEOUT
            while not all(clients.ready(job) for job in jobs):
                if time.monotonic() > deadline:
                    raise RuntimeError("client processes did not start in time")
                await asyncio.sleep(0.1)
            stop_monitor = asyncio.Event()
            watcher = asyncio.create_task(self.monitor(admin, stop_monitor))
            try:
                workload_start = time.time()
                await self.inject(admin, time.monotonic() + config.seconds)
                await asyncio.to_thread(clients.stop_all)
                clients_stopped = time.time()
            finally:
                stop_monitor.set()
                await watcher
            # Every lease must now end within its TTL of its last renewal or of the last start.
            quiet_from = max([clients_stopped, *self.faults.windows.coordinator_starts])
            wait = quiet_from + config.ttl[1] + checks.EXPIRY_SLACK - time.time()
            await asyncio.sleep(max(0.0, wait))
            final = await _retry(lambda: admin.list_leases())
            held = [x.lease_id for x in final if any(n.startswith(NAMESPACE) for n in x.names)]
            checked_at = time.time()
        stream = await asyncio.wait_for(read_events(self.url, began), 120)
        exit_code = coordinator.stop()
        assert self.clients is not None
        windows = self.faults.windows
        windows.process_ends.update(self.clients.ended)
        record = RunRecord(
            seconds=config.seconds,
            clients=config.clients,
            tasks=config.tasks,
            seed=config.seed,
            fault_kinds=list(config.faults),
            ttl=config.ttl,
            began=began,
            workload_start=workload_start,
            checked_at=checked_at,
            windows=windows,
            fault_counts=dict(self.faults.counts),
            fault_lines=self.faults.lines,
            spray=dict(self.faults.spray),
            unexpected_exits=coordinator.unexpected_exits,
            final_exit_code=exit_code,
            killed=sorted(self.clients.killed),
            exit_codes=self.clients.exit_codes,
            processes=sum(self.clients.generations.values()),
            launches=coordinator.launches,
            held=held,
        )
        record.save(self.folder, stream)
        return Report.of(record, self.folder, stream)

    async def inject(self, admin: AsyncAdminClient, until: float) -> None:
        kinds: list[str] = []
        actions = {
            "holder_kill": self.holder_kill,
            "coordinator_kill": self.coordinator_kill,
            "nats_restart": self.nats_restart,
            "db_stall": self.db_stall,
            "spray": self.spray,
        }
        await _sleep_until(min(until, time.monotonic() + self.config.first_fault_after))
        while time.monotonic() < until:
            if not kinds:  # every kind once per round, in a random order
                kinds = list(self.config.faults)
                self.rng.shuffle(kinds)
            await actions[kinds.pop()](admin)
            await _sleep_until(min(until, time.monotonic() + self.rng.uniform(*self.config.gap)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.clients is not None:
                self.clients.kill_all()
        with contextlib.suppress(Exception):
            if self.coordinator is not None:
                self.coordinator.stop()
        with contextlib.suppress(Exception):
            self.nats.stop()


async def _probe(admin: AsyncAdminClient, until: asyncio.Future[Any]) -> float:
    """Ping the coordinator back to back until `until` is done; the slowest answer (a ping
    that is not answered at all counts as its timeout)."""
    slowest = 0.0
    while not until.done():
        asked = time.monotonic()
        with contextlib.suppress(GCLError):
            await admin.ping()
        slowest = max(slowest, time.monotonic() - asked)
        await asyncio.sleep(0.02)
    return slowest


async def _sleep_until(monotonic: float) -> None:
    await asyncio.sleep(max(0.0, monotonic - time.monotonic()))


async def _retry(call: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except CoordinatorUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def read_events(url: str, since: float) -> list[Event]:
    """Every stored event since the run began, in stream order."""
    found: list[Event] = []
    settings = NatsSettings(nats_url=url, prefix=PREFIX)
    start = datetime.fromtimestamp(since - 1, UTC)
    async for event in events(settings=settings, since=start, follow=False):
        found.append(event)
    return found


# --- the spray -----------------------------------------------------------------------------


def malformed_payloads(max_payload: int) -> list[bytes]:
    """Payloads no request schema accepts (an empty one is `{}`: harmless reads only)."""
    deep = b"[" * 30_000 + b"]" * 30_000
    return [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe\x00\x01",
        b"null",
        b"[]",
        b"1e999",
        b'{"v": 999}',
        b'{"v": "2", "names": 5}',
        b'{"v": 2, "bogus": true, "names": ["chaos.one"], "request_id": "x", "secret": "s"}',
        b'{"v": 2, "lease_id": ' + b"9" * 5000 + b', "secret": null}',
        b'{"v": 2, "names": ["\xed\xa0\x80"], "occupy": NaN}',
        b'{"v": 2, "request_id": "a", "request_id": {"b": [1, 2, {}]}}',
        deep,
        b'{"v": 2, "pad": "' + b"x" * 70_000 + b'"}',  # over the coordinator's 64 KiB
        b'{"pad": "' + b"y" * (max_payload - 2_000) + b'"}',  # just under what NATS carries
    ]


async def spray(url: str) -> Counter[str]:
    """Every payload at every request subject (also `{op}.{user}` of admin operations), as a
    request and as a bare publish; count how the coordinator answered."""
    counts: Counter[str] = Counter()
    subjects = Subjects(PREFIX)
    targets = [subjects.op(op.name) for op in OPERATIONS]
    targets += [subjects.op(op.name) + ".chaos" for op in OPERATIONS if op.admin]
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=2)
    try:
        payloads = malformed_payloads(nc.max_payload)
        gate = asyncio.Semaphore(16)

        async def one(subject: str, payload: bytes) -> None:
            async with gate:
                counts["requests"] += 1
                try:
                    msg = await nc.request(subject, payload, timeout=5)
                except NoRespondersError:
                    counts["no_responders"] += 1
                    return
                except (NatsTimeout, TimeoutError):
                    counts["unanswered"] += 1
                    return
                try:
                    reply = json.loads(msg.data)
                except ValueError:
                    counts["unreadable_reply"] += 1
                    return
                status = "accepted" if reply.get("ok") else "refused"
                counts[status] += 1
                if not reply.get("ok"):
                    counts["code:" + str((reply.get("error") or {}).get("code"))] += 1

        await asyncio.gather(*(one(s, p) for s in targets for p in payloads))
        for subject in targets:
            for payload in payloads[:8]:
                await nc.publish(subject, payload)
                counts["published"] += 1
        await nc.flush(timeout=5)
    finally:
        await nc.close()
    return counts


# --- the verdict ---------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What a run did and saw, besides the clients' logs: enough to check it again later
    (`--analyse DIR`), saved as run.json beside events.jsonl."""

    seconds: float
    clients: int
    tasks: int
    seed: int
    fault_kinds: list[str]
    ttl: tuple[float, float]
    began: float
    workload_start: float
    checked_at: float  # when the leases still held were listed
    windows: checks.Faults
    fault_counts: dict[str, int]
    fault_lines: list[str]
    spray: dict[str, int]
    unexpected_exits: list[tuple[float, int | None]]
    final_exit_code: int | None
    killed: list[str]
    exit_codes: dict[str, int | None]
    processes: int
    launches: int
    held: list[str]

    def save(self, folder: Path, stream: list[Event]) -> None:
        data = dataclasses.asdict(self)
        data["windows"]["restores"] = [
            [killed, ready, sorted(ids)] for killed, ready, ids in self.windows.restores
        ]
        (folder / "run.json").write_text(json.dumps(data, indent=1))
        with open(folder / "events.jsonl", "w") as out:
            for event in stream:
                out.write(event.model_dump_json() + "\n")

    @classmethod
    def load(cls, folder: Path) -> tuple[RunRecord, list[Event]]:
        data = json.loads((folder / "run.json").read_text())
        w = data["windows"]
        data["windows"] = checks.Faults(
            nats_down=[tuple(x) for x in w["nats_down"]],
            coordinator_kills=w["coordinator_kills"],
            coordinator_starts=w["coordinator_starts"],
            stalls=[tuple(x) for x in w["stalls"]],
            process_ends=w["process_ends"],
            process_pids={int(k): v for k, v in w["process_pids"].items()},
            restores=[(k, r, frozenset(ids)) for k, r, ids in w["restores"]],
        )
        data["ttl"] = tuple(data["ttl"])
        data["unexpected_exits"] = [tuple(x) for x in data["unexpected_exits"]]
        lines = (folder / "events.jsonl").read_text().splitlines()
        return cls(**data), [Event.model_validate_json(line) for line in lines if line]


@dataclass
class Report:
    record: RunRecord
    folder: Path
    results: list[checks.Check] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.results)

    @property
    def ok(self) -> bool:
        return self.violations == 0

    @classmethod
    def of(cls, record: RunRecord, folder: Path, stream: list[Event]) -> Report:
        report = cls(record, folder)
        report.analyse(stream)
        return report

    def analyse(self, stream: list[Event]) -> None:
        record = self.record
        faults = record.windows
        grants, client_counts, pids = load_client_logs(self.folder)
        faults.process_pids.update(pids)
        stream = [e for e in stream if not e.names or any(n.startswith(NAMESPACE) for n in e.names)]
        ends = checks.end_times(stream)
        final = record.checked_at
        over, peaks = checks.over_grants(grants, LIMITS, ends, faults, final)
        self.results.append(over)
        self.results.append(checks.reported_over_grants(stream, NAMESPACE))
        rate = {g.lease_id: (g.granted_at, g.occupy) for g in grants if g.mode == "rate"}
        for event in stream:
            if event.kind == "lease.granted" and RATE_NAME in event.names and event.lease_id:
                rate.setdefault(event.lease_id, (event.at, event.occupy or 1))
        self.results.append(checks.rate_over_grants(rate, RATE_LIMIT, RATE_PER_SECOND))
        self.results.append(checks.fencing(grants, stream, faults, NAMESPACE))
        self.results.append(checks.forgotten_at_restart(grants, ends, faults))
        lost, lost_counts = checks.lost_leases(
            grants, stream, record.held, faults, final, frozenset({RATE_NAME}), record.ttl[1]
        )
        self.results.append(lost)
        crashes = checks.Check("coordinator exits not caused by the script")
        for at, code in record.unexpected_exits:
            crashes.fail(f"exited with {code} at {at:.3f}")
        if record.final_exit_code != 0:
            crashes.fail(f"the final clean stop (SIGTERM) exited with {record.final_exit_code}")
        self.results.append(crashes)
        self.results.append(coordinator_log_problems(self.folder / "coordinator.log"))
        silent = checks.Check("coordinator silent on malformed input")
        for key in ("unanswered", "unreadable_reply", "ping_after_unanswered"):
            for _ in range(record.spray.get(key, 0)):
                silent.fail(key)
        self.results.append(silent)
        client_deaths = checks.Check("client processes that died by themselves")
        for name, code in sorted(record.exit_codes.items()):
            if name not in record.killed and code != 0:
                client_deaths.fail(f"{name} exited with {code}")
        self.results.append(client_deaths)
        concurrency = [g for g in grants if g.mode == "concurrency"]
        outcomes = Counter(g.outcome or "none (process killed)" for g in concurrency)
        self.numbers = {
            "grants_seen": len(grants),
            "concurrency_grants": len(concurrency),
            "multi_name_grants": sum(1 for g in concurrency if len(g.names) > 1),
            "occupy_2_grants": sum(1 for g in concurrency if g.occupy > 1),
            "rate_grants": len(grants) - len(concurrency),
            "release_outcomes": dict(outcomes),
            "lost_under_holder_by_fault": dict(lost_causes(concurrency, faults)),
            "client_failures": dict(client_counts),
            "events": dict(Counter(e.kind for e in stream)),
            "peaks": peaks,
            "lost": lost_counts,
            "held_at_end": len(record.held),
            "faults": record.fault_counts,
            "spray": record.spray,
            "processes": record.processes,
            "coordinator_launches": record.launches,
        }

    def render(self) -> str:
        n = self.numbers
        c = self.record
        out = [
            f"chaos run: {c.seconds:g} s of workload, seed {c.seed}, {c.clients} client processes "
            f"x {c.tasks} tasks, TTLs {c.ttl[0]:g}-{c.ttl[1]:g} s; limits "
            + ", ".join(f"{k} {v}" for k, v in LIMITS.items())
            + f", {RATE_NAME} {RATE_LIMIT} at {RATE_PER_SECOND:g}/s",
            f"faults injected: {sum(n['faults'].values())} ("
            + ", ".join(f"{k} {n['faults'].get(k, 0)}" for k in c.fault_kinds)
            + ")",
        ]
        out += [f"  {line}" for line in c.fault_lines]
        spray = n["spray"]
        codes = ", ".join(f"{k[5:]} {v}" for k, v in sorted(spray.items()) if k.startswith("code:"))
        out.append(
            f"spray totals: {spray.get('requests', 0)} requests ({codes}), "
            f"{spray.get('accepted', 0)} accepted, {spray.get('unanswered', 0)} unanswered, "
            f"{spray.get('no_responders', 0)} no responders, "
            f"{spray.get('published', 0)} published without reply subject"
        )
        out.append(
            f"workload: {n['processes']} client processes in all, "
            f"{n['grants_seen']} grants seen ({n['concurrency_grants']} concurrency, "
            f"{n['multi_name_grants']} multi-name, {n['occupy_2_grants']} occupy=2; "
            f"{n['rate_grants']} rate)"
        )
        out.append("  release outcomes: " + _pairs(n["release_outcomes"]))
        out.append(
            "  leases that ended under their holder (lost, not_found), by the fault during the "
            "hold: " + _pairs(n["lost_under_holder_by_fault"])
        )
        out.append("  failed acquires: " + _pairs(n["client_failures"]))
        out.append(
            "  peak holders: " + ", ".join(f"{k} {v}/{LIMITS[k]}" for k, v in n["peaks"].items())
        )
        out.append(
            f"events read from the stream: {sum(n['events'].values())} ("
            + _pairs(n["events"])
            + ")"
        )
        lost = n["lost"]
        out.append(
            f"events lost during outages (not violations): {lost['grant_events_lost_in_outage']} "
            f"lease.granted, {lost['end_events_lost_in_outage']} end events "
            f"(of {lost['stories']} concurrency leases)"
        )
        out.append(
            f"coordinator launches: {n['coordinator_launches']}; "
            f"leases held at the end: {n['held_at_end']}"
        )
        out.append("checks (violations):")
        for check in self.results:
            extra = f"  [{check.detail}]" if check.detail else ""
            out.append(f"  {check.violations:>5}  {check.name}{extra}")
            out += [f"         e.g. {example}" for example in check.examples]
        out.append(f"RESULT: {'PASS' if self.ok else 'FAIL'} ({self.violations} violations)")
        return "\n".join(out)


def lost_causes(grants: list[checks.Grant], faults: checks.Faults) -> Counter[str]:
    """Leases the coordinator ended under a live holder, by the fault that overlapped the hold:
    a NATS outage or a database stall longer than the TTL, or a restart (expected), or none."""
    causes: Counter[str] = Counter()
    for grant in grants:
        if grant.outcome not in ("lost", "not_found") or grant.t_rel is None:
            continue
        span = (grant.t_acq, grant.t_rel)
        if any(a <= span[1] and span[0] <= b for a, b in faults.nats_down):
            causes["nats_restart"] += 1
        elif any(a <= span[1] and span[0] <= b for a, b in faults.stalls):
            causes["db_stall"] += 1
        elif any(span[0] <= t <= span[1] for t in faults.coordinator_kills):
            causes["coordinator_kill"] += 1
        else:
            causes["no fault"] += 1
    return causes


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def load_client_logs(folder: Path) -> tuple[list[checks.Grant], Counter[str], dict[int, str]]:
    grants: dict[str, checks.Grant] = {}
    failures: Counter[str] = Counter()
    pids: dict[int, str] = {}
    for path in sorted(folder.glob("c*-*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                failures["(unreadable log line)"] += 1
                continue
            kind = record.get("kind")
            if kind == "ready":
                pids[int(record["pid"])] = path.stem
            elif kind == "grant":
                fields = {k: v for k, v in record.items() if k != "kind"}
                grants[record["lease_id"]] = checks.Grant(**fields)
            elif kind == "release":
                grant = grants.get(record["lease_id"])
                if grant is not None:
                    grant.t_rel, grant.t_done = record["t_rel"], record["t_done"]
                    grant.outcome = record["outcome"]
            elif kind in ("fail", "unexpected"):
                failures[("unexpected " if kind == "unexpected" else "") + record["error"]] += 1
    return list(grants.values()), failures, pids


_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)
_EXPECTED_TRACEBACK = (
    "commit failed; retrying",  # the database stall: retried, by design
)


def coordinator_log_problems(path: Path) -> checks.Check:
    """Tracebacks in the coordinator's log, but for the commit retries a stall causes."""
    check = checks.Check("tracebacks and internal errors in the coordinator log")
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    expected = 0
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            said = lines[i - 1] if i else ""  # log.exception's own message, just before
            if any(marker in said for marker in _EXPECTED_TRACEBACK):
                expected += 1
                continue
            tail = next((x for x in lines[i + 1 : i + 80] if x and not x.startswith(" ")), "?")
            check.fail(f"{lines[i - 1][:160] if i else ''} -> {tail[:160]}")
        elif "internal error" in line:
            check.fail(line[:200])
    check.detail = f"commit retries during stalls: {expected}"
    return check


# --- entry -----------------------------------------------------------------------------------


async def run_chaos(config: Config) -> Report:
    folder = Path(config.keep) if config.keep else Path(tempfile.mkdtemp(prefix="gcl-chaos-"))
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: a run needs a folder of its own")
    folder.mkdir(parents=True, exist_ok=True)
    chaos = Chaos(config, folder)
    try:
        report = await chaos.run()
    finally:
        chaos.close()
    if config.keep is None and report.ok:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def analyse_folder(folder: Path) -> Report:
    """Check a kept run again (after changing a check, say)."""
    record, stream = RunRecord.load(folder)
    return Report.of(record, folder, stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="workload duration")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--tasks", type=int, default=4, help="concurrent tasks per client")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="fault kinds to inject")
    parser.add_argument("--gap", default="5,12", help="seconds between faults: MIN,MAX")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    parser.add_argument("--analyse", type=Path, default=None, help="check a kept run again")
    args = parser.parse_args()
    if args.analyse is not None:
        report = analyse_folder(args.analyse)
        print(report.render())
        sys.exit(0 if report.ok else 1)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}: choose from {', '.join(FAULT_KINDS)}")
    if not 5 <= args.seconds <= 3_600 or not 1 <= args.clients <= 16 or not 1 <= args.tasks <= 32:
        parser.error("--seconds 5..3600, --clients 1..16, --tasks 1..32")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: the folder is not empty")
    low, high = (float(x) for x in args.gap.split(","))
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    config = Config(
        seconds=args.seconds,
        clients=args.clients,
        tasks=args.tasks,
        seed=seed,
        faults=faults,
        gap=(low, high),
        keep=args.keep,
    )
    started = time.monotonic()
    report = asyncio.run(run_chaos(config))
    print(report.render())
    print(f"took {time.monotonic() - started:.0f} s in all")
    if not report.ok:
        print(f"work folder kept: {report.folder}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    from bench.chaos import main as _main  # as `bench.chaos`, so spawned children find it

    _main()
