"""The measurements: each takes the running cluster and returns named figures.

Every loop is bounded by a count and a deadline, and every child process is reaped, so a broken
coordinator makes the benchmark fail with a message instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

import nats

from bench.harness import BenchError, Cluster, cpu_seconds
from bench.stats import percentile, summary
from bench.workers import (
    ECHO_PAYLOAD,
    LoadJob,
    PingPongJob,
    host_now_ns,
    run_echo,
    run_echo_load,
    run_holder,
    run_load,
    run_pingpong,
)
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient

CTX = mp.get_context("spawn")
CHILD_START_TIMEOUT = 60.0
_children: list[BaseProcess] = []


@dataclass(frozen=True)
class Plan:
    """How much of everything to do; `quick()` keeps a whole run under a minute."""

    warmup_pairs: int = 200
    latency_pairs: int = 3000
    load_seconds: float = 5.0
    load_processes: int = 4
    handoffs: int = 200
    hold_seconds: float = 0.015
    kill_repeats: int = 3
    kill_ttl: float = 2.0
    restart_leases: int = 1000
    restart_repeats: int = 3
    rate_seconds: float = 10.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup_pairs=50,
            latency_pairs=300,
            load_seconds=1.5,
            load_processes=2,
            handoffs=30,
            kill_repeats=1,
            restart_repeats=1,
            rate_seconds=2.0,
        )


# --- child processes -----------------------------------------------------------------------


def spawn(target: Callable[..., None], *args: Any) -> BaseProcess:
    process = CTX.Process(target=target, args=args, daemon=True)
    process.start()
    _children.append(process)
    return process


def reap(processes: list[BaseProcess]) -> None:
    """Terminate, then kill, whatever is still running; never wait unboundedly."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.join(5)
        with contextlib.suppress(ValueError):
            _children.remove(process)


def reap_all() -> None:
    reap(list(_children))


async def collect(results: Queue[Any], want: str, count: int, timeout: float) -> list[Any]:
    """Read `count` messages of kind `want` from children; a child's error fails the run."""
    deadline = time.monotonic() + timeout
    found: list[Any] = []
    while len(found) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"children sent {len(found)}/{count} {want!r} within {timeout:g}s")
        try:
            kind, pid, payload = await asyncio.to_thread(results.get, True, min(left, 1.0))
        except Exception:  # queue.Empty: look at the deadline again
            continue
        if kind == "error":
            raise BenchError(f"child process {pid} failed: {payload}")
        if kind == want:
            found.append(payload)
    return found


# --- 0. the floor --------------------------------------------------------------------------


async def nats_floor(cluster: Cluster, plan: Plan) -> dict[str, float]:
    """Bare nats-py request/reply to a responder in another process: what gcl builds on."""
    subject = "bench.echo"
    results: Queue[Any] = CTX.Queue()
    child = spawn(run_echo, cluster.url, subject, results)
    samples: list[float] = []
    try:
        await collect(results, "ready", 1, CHILD_START_TIMEOUT)
        nc = await nats.connect(cluster.url)
        try:
            for _ in range(plan.warmup_pairs):
                await nc.request(subject, ECHO_PAYLOAD, timeout=5)
            for _ in range(plan.latency_pairs):
                started = time.perf_counter_ns()
                await nc.request(subject, ECHO_PAYLOAD, timeout=5)
                samples.append((time.perf_counter_ns() - started) / 1e6)
        finally:
            await nc.close()
        figures = {
            "nats_rtt_p50_ms": percentile(samples, 50),
            "nats_rtt_p99_ms": percentile(samples, 99),
        }
        if child.pid:
            figures.update(await _cpu_floor(cluster, plan, subject, child.pid))
    finally:
        reap([child])
    return figures


async def _cpu_floor(cluster: Cluster, plan: Plan, subject: str, echo_pid: int) -> dict[str, float]:
    """The CPU floor under the throughput run's shape: 32 connections in the same load
    processes, each sending bare nats-py requests to the echo responder back to back. A
    coordinator serves at least two such requests per acquire+release, and a worker sends
    them: the `*_over_floor` ratios divide by twice these figures."""
    requests, cpu = await _drive(cluster, plan, run_echo_load, subject, 32, echo_pid)
    count = max(1, requests)
    return {
        "floor_32_requests_per_s": requests / plan.load_seconds,
        "floor_32_responder_us_per_request": cpu[0] / count * 1e6,
        "floor_32_nats_us_per_request": cpu[1] / count * 1e6,
        "floor_32_requesters_us_per_request": sum(cpu[2:]) / count * 1e6,
    }


# --- 1. latency, one client ------------------------------------------------------------------


async def uncontended(cluster: Cluster, admin: AsyncAdminClient, plan: Plan) -> dict[str, float]:
    """One client, one connection, nobody else: the floor of what a caller pays per block."""
    name = "bench.solo"
    await admin.create_limit(name, 1_000_000)
    deadline = time.monotonic() + 60
    samples: list[float] = []
    async with AsyncClient(cluster.settings()) as client:
        for _ in range(plan.warmup_pairs):
            async with client.concurrency(name):
                pass
        for _ in range(plan.latency_pairs):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter_ns()
            async with client.concurrency(name):
                pass
            samples.append((time.perf_counter_ns() - started) / 1e6)
    return summary(samples, "uncontended")


# --- 2. throughput -------------------------------------------------------------------------


async def throughput(
    cluster: Cluster, admin: AsyncAdminClient, plan: Plan, clients: int, contended: bool
) -> dict[str, float]:
    """Pairs per second summed over `clients` connections spread across processes.

    Also the CPU each side burnt in the window: on a 2-core host it shows who the bottleneck is.
    """
    slots = max(1, clients // 4) if contended else clients * 10
    key = f"throughput_{clients}_{'busy' if contended else 'free'}"
    name = f"bench.{key}"
    await admin.create_limit(name, slots)
    pairs, cpu = await _drive(cluster, plan, run_load, name, clients, cluster.pid)
    return {
        f"{key}_pairs_per_s": pairs / plan.load_seconds,
        f"{key}_coordinator_cpu_cores": cpu[0] / plan.load_seconds,
        f"{key}_coordinator_us_per_pair": cpu[0] / max(1, pairs) * 1e6,
        f"{key}_nats_cpu_cores": cpu[1] / plan.load_seconds,
        f"{key}_clients_cpu_cores": sum(cpu[2:]) / plan.load_seconds,
    }


async def _drive(
    cluster: Cluster,
    plan: Plan,
    entry: Callable[..., None],
    target: str,
    clients: int,
    served_by: int,
) -> tuple[int, list[float]]:
    """Run `entry` in load processes, `clients` connections in all, for plan.load_seconds:
    what they counted, and the CPU seconds of `served_by` (the pid answering them), NATS,
    then each load process."""
    procs = min(plan.load_processes, clients)
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    results: Queue[Any] = CTX.Queue()
    start, start_at = CTX.Event(), CTX.Value("q", 0)
    children = []
    try:
        for share in shares:
            job = LoadJob(cluster.url, target, share, plan.load_seconds, 1_000_000)
            children.append(spawn(entry, job, start, start_at, results))
        await collect(results, "ready", procs, CHILD_START_TIMEOUT)
        begin = host_now_ns() + 100_000_000
        start_at.value = begin
        start.set()
        pids = [served_by, cluster.nats_pid, *(c.pid for c in children if c.pid)]
        window = asyncio.create_task(_cpu_window(pids, begin, plan.load_seconds))
        counts = await collect(results, "done", procs, plan.load_seconds + 90)
        cpu = await window
    finally:
        reap(children)
    return sum(counts), cpu


async def _cpu_window(pids: list[int], begin_ns: int, seconds: float) -> list[float]:
    """CPU seconds each pid used between `begin_ns` and `seconds` later (host clock)."""
    await asyncio.sleep(max(0.0, (begin_ns - host_now_ns()) / 1e9))
    before = [cpu_seconds(pid) for pid in pids]
    await asyncio.sleep(seconds)
    return [cpu_seconds(pid) - was for pid, was in zip(pids, before, strict=True)]


async def all_throughput(cluster: Cluster, admin: AsyncAdminClient, plan: Plan) -> dict[str, float]:
    figures: dict[str, float] = {}
    for clients, contended in ((1, False), (8, False), (8, True), (32, False), (32, True)):
        figures.update(await throughput(cluster, admin, plan, clients, contended))
    return figures


# --- 3. wake-up ----------------------------------------------------------------------------


async def wakeup(cluster: Cluster, admin: AsyncAdminClient, plan: Plan) -> dict[str, float]:
    """Two processes hand one slot back and forth; each entry is timed from the other's release."""
    name = "bench.handoff"
    await admin.create_limit(name, 1)
    rounds = plan.handoffs // 2 + 1
    results: Queue[Any] = CTX.Queue()
    start = CTX.Event()
    job = PingPongJob(cluster.url, name, rounds, plan.hold_seconds)
    children = [spawn(run_pingpong, job, start, results) for _ in range(2)]
    try:
        await collect(results, "ready", 2, CHILD_START_TIMEOUT)
        start.set()
        budget = rounds * 2 * (plan.hold_seconds + 0.5) + 60
        both = await collect(results, "done", 2, budget)
    finally:
        reap(children)
    latencies = handoff_latencies_ms(both[0], both[1]) + handoff_latencies_ms(both[1], both[0])
    if len(latencies) < max(5, plan.handoffs // 4):
        raise BenchError(f"only {len(latencies)} hand-offs had a waiter blocked at release")
    figures = summary(latencies, "wakeup")
    figures["wakeup_samples"] = float(len(latencies))
    return figures


def handoff_latencies_ms(
    waiter: list[tuple[int, int, int]], holder: list[tuple[int, int, int]]
) -> list[float]:
    """For each entry of `waiter`: entry minus the holder's last release before it.

    Counted only if the waiter had asked before that release, i.e. it really was blocked.
    """
    releases = sorted(record[2] for record in holder)
    latencies = []
    for requested, entered, _ in waiter:
        before = [r for r in releases if r < entered]
        if before and requested < before[-1]:
            latencies.append((entered - before[-1]) / 1e6)
    return latencies


# --- 4. crashes ----------------------------------------------------------------------------


async def holder_kill(cluster: Cluster, admin: AsyncAdminClient, plan: Plan) -> dict[str, float]:
    """A holder is SIGKILLed while someone waits: how long until the waiter gets the slot."""
    recoveries = []
    async with AsyncClient(cluster.settings()) as client:
        for attempt in range(plan.kill_repeats):
            name = f"bench.crash.{attempt}"
            await admin.create_limit(name, 1)
            recoveries.append(await _one_holder_kill(cluster, admin, client, name, plan.kill_ttl))
    return {
        "holder_kill_recovery_s": max(recoveries),
        "holder_kill_recovery_median_s": statistics.median(recoveries),
    }


async def _one_holder_kill(
    cluster: Cluster, admin: AsyncAdminClient, client: AsyncClient, name: str, ttl: float
) -> float:
    results: Queue[Any] = CTX.Queue()
    holder = spawn(run_holder, cluster.url, name, ttl, results)
    try:
        await collect(results, "held", 1, CHILD_START_TIMEOUT)
        entered: list[int] = []
        waiter = asyncio.create_task(_enter(client, name, ttl + 20, entered))
        await _until(lambda: _waiting(admin, name, 1), 10, "the waiter never queued")
        assert holder.pid is not None
        killed = host_now_ns()
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.wait_for(waiter, ttl + 30)
    finally:
        reap([holder])
    return (entered[0] - killed) / 1e9


async def _enter(client: AsyncClient, name: str, timeout: float, entered: list[int]) -> None:
    async with client.concurrency(name, timeout_seconds=timeout):
        entered.append(host_now_ns())


async def _waiting(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters >= count


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.01)


async def coordinator_restart(
    cluster: Cluster, admin: AsyncAdminClient, pinger: AsyncAdminClient, plan: Plan
) -> dict[str, float]:
    """kill -9 the coordinator holding many live leases; time from relaunch to a new grant."""
    name = "bench.restart"
    await admin.create_limit(name, plan.restart_leases * 2)
    pings, grants = [], []
    async with AsyncClient(cluster.settings()) as client:
        await _fill(client, name, plan.restart_leases)
        held = (await admin.get_limit(name)).limit.held
        if held != plan.restart_leases:
            raise BenchError(f"expected {plan.restart_leases} live leases, found {held}")
        for _ in range(plan.restart_repeats):
            cluster.kill_coordinator()
            launched = time.monotonic()
            cluster.launch()
            pings.append(await cluster.wait_ready(pinger) - launched)
            lease = await client.acquire(name, timeout_seconds=10, lease_ttl=60)
            grants.append(time.monotonic() - launched)
            await client.release(lease)
            # A release is answered before its commit; a read is answered after it. Without
            # this, the next kill can undo the release and the lease would come back.
            await admin.get_limit(name)
        restored = (await admin.get_limit(name)).limit.held
    if restored != plan.restart_leases:
        raise BenchError(f"{plan.restart_leases} leases before the kill, {restored} after")
    return {
        "coordinator_restart_ping_s": statistics.median(pings),
        "coordinator_restart_1000_leases_s": statistics.median(grants),
    }


async def _fill(client: AsyncClient, name: str, count: int) -> None:
    """Take `count` long leases, not renewed (plain acquire), that outlive the benchmark."""
    batch = 100
    for first in range(0, count, batch):
        size = min(batch, count - first)
        await asyncio.gather(
            *(client.acquire(name, timeout_seconds=30, lease_ttl=900) for _ in range(size))
        )


# --- 5. rate -------------------------------------------------------------------------------


async def rate_limit(cluster: Cluster, admin: AsyncAdminClient, plan: Plan) -> dict[str, float]:
    """Four callers share a 20/s rate (limit 1): achieved grants per second over configured."""
    name, configured = "bench.rate", 20.0
    await admin.create_limit(name, 1, slot_decay_per_second=configured)
    grants: list[int] = []
    async with AsyncClient(cluster.settings()) as client:
        await client.rate_limit(name)  # warm-up; starts the bucket full
        end = host_now_ns() + int(plan.rate_seconds * 1e9)
        callers = [_rate_caller(client, name, end, grants) for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*callers), plan.rate_seconds + 30)
    grants.sort()
    if len(grants) < 3:
        raise BenchError(f"only {len(grants)} rate grants in {plan.rate_seconds:g}s")
    achieved = (len(grants) - 1) / ((grants[-1] - grants[0]) / 1e9)
    return {"rate_limit_achieved_per_s": achieved, "rate_limit_ratio": achieved / configured}


async def _rate_caller(client: AsyncClient, name: str, end_ns: int, grants: list[int]) -> None:
    for _ in range(100_000):
        if host_now_ns() >= end_ns:
            return
        await client.rate_limit(name, timeout_seconds=5)
        now = host_now_ns()
        if now <= end_ns:
            grants.append(now)
