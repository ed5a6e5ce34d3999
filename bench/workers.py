"""Entry points of the benchmark's child processes (started with multiprocessing "spawn").

Load comes from separate OS processes because one Python process cannot drive 32 clients'
worth of requests: its own GIL would be the bottleneck and we would measure the client. Times
that are compared across processes use CLOCK_MONOTONIC, which is one clock for the whole host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import nats
from nats.aio.msg import Msg

from gcl.sdk.client import AsyncClient
from gcl.sdk.settings import ClientSettings

WARMUP_PAIRS = 5
MAX_WAIT_FOR_START = 60.0
ECHO_PAYLOAD = b"x" * 300  # about an acquire request's size


def host_now_ns() -> int:
    """One clock shared by every process on this host."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass(frozen=True)
class LoadJob:
    """What one load process does: `clients` connections looping acquire+release on `name`."""

    nats_url: str
    name: str
    clients: int
    duration: float
    max_pairs_per_client: int


def run_load(job: LoadJob, start: MpEvent, start_at: Any, results: Queue[Any]) -> None:
    """Process entry: connect, report ready, wait for the common start, loop, report counts."""
    try:
        results.put(asyncio.run(_load(job, start, start_at, results)))
    except BaseException as exc:  # the parent must hear of it, or it waits for its timeout
        results.put(("error", os.getpid(), repr(exc)))


async def _load(
    job: LoadJob, start: MpEvent, start_at: Any, results: Queue[Any]
) -> tuple[str, int, int]:
    settings = ClientSettings(nats_url=job.nats_url, unavailable_timeout=10)
    clients = [AsyncClient(settings, label=f"bench-{os.getpid()}-{i}") for i in range(job.clients)]
    try:
        for client in clients:
            await client.__aenter__()
        for client in clients:
            for _ in range(WARMUP_PAIRS):
                async with client.concurrency(job.name):
                    pass
        return await _window(
            job,
            start,
            start_at,
            results,
            lambda end_ns: [_pairs(c, job.name, end_ns, job.max_pairs_per_client) for c in clients],
        )
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


async def _window(
    job: LoadJob,
    start: MpEvent,
    start_at: Any,
    results: Queue[Any],
    loops: Callable[[int], list[Coroutine[Any, Any, int]]],
) -> tuple[str, int, int]:
    """Report ready, wait for the common start, run `loops(end_ns)` until the window closes
    (each loop counts what it finished inside it), and report the sum."""
    results.put(("ready", os.getpid(), 0))
    if not await asyncio.to_thread(start.wait, MAX_WAIT_FOR_START):
        raise TimeoutError("the parent never gave the start signal")
    begin_ns = int(start_at.value)
    end_ns = begin_ns + int(job.duration * 1e9)
    await asyncio.sleep(max(0.0, (begin_ns - host_now_ns()) / 1e9))
    counts = await asyncio.wait_for(asyncio.gather(*loops(end_ns)), job.duration + 60)
    return ("done", os.getpid(), sum(counts))


async def _pairs(client: AsyncClient, name: str, end_ns: int, max_pairs: int) -> int:
    """Acquire+release until the window closes; count only pairs finished inside it."""
    done = 0
    for _ in range(max_pairs):
        if host_now_ns() >= end_ns:
            break
        async with client.concurrency(name):
            pass
        if host_now_ns() <= end_ns:
            done += 1
    return done


def run_echo_load(job: LoadJob, start: MpEvent, start_at: Any, results: Queue[Any]) -> None:
    """Process entry: as run_load, but bare nats-py requests to the echo responder on
    `job.name` (a subject): the floor the throughput run's clients and coordinator sit on."""
    try:
        results.put(asyncio.run(_echo_load(job, start, start_at, results)))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


async def _echo_load(
    job: LoadJob, start: MpEvent, start_at: Any, results: Queue[Any]
) -> tuple[str, int, int]:
    connections = [await nats.connect(job.nats_url) for _ in range(job.clients)]
    try:
        for nc in connections:
            for _ in range(WARMUP_PAIRS):
                await nc.request(job.name, ECHO_PAYLOAD, timeout=5)
        return await _window(
            job,
            start,
            start_at,
            results,
            lambda end: [
                _requests(nc, job.name, end, job.max_pairs_per_client) for nc in connections
            ],
        )
    finally:
        for nc in connections:
            with contextlib.suppress(Exception):
                await nc.close()


async def _requests(nc: nats.NATS, subject: str, end_ns: int, max_requests: int) -> int:
    """Request/reply until the window closes; count only those answered inside it."""
    done = 0
    for _ in range(max_requests):
        if host_now_ns() >= end_ns:
            break
        await nc.request(subject, ECHO_PAYLOAD, timeout=5)
        if host_now_ns() <= end_ns:
            done += 1
    return done


@dataclass(frozen=True)
class PingPongJob:
    """One of two processes handing a one-slot limit back and forth."""

    nats_url: str
    name: str
    rounds: int
    hold_seconds: float


def run_pingpong(job: PingPongJob, start: MpEvent, results: Queue[Any]) -> None:
    """Process entry: hold the slot `rounds` times, recording request, entry and release times."""
    try:
        results.put(asyncio.run(_pingpong(job, start, results)))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


async def _pingpong(
    job: PingPongJob, start: MpEvent, results: Queue[Any]
) -> tuple[str, int, list[tuple[int, int, int]]]:
    settings = ClientSettings(nats_url=job.nats_url, unavailable_timeout=10)
    records: list[tuple[int, int, int]] = []
    async with AsyncClient(settings, label=f"pingpong-{os.getpid()}") as client:
        async with client.concurrency(job.name):  # warm-up: connection, renewer thread
            pass
        results.put(("ready", os.getpid(), []))
        if not await asyncio.to_thread(start.wait, MAX_WAIT_FOR_START):
            raise TimeoutError("the parent never gave the start signal")
        deadline = time.monotonic() + job.rounds * (job.hold_seconds + 0.5) + 30
        for _ in range(job.rounds):
            if time.monotonic() > deadline:
                break
            requested = host_now_ns()
            async with client.concurrency(job.name):
                entered = host_now_ns()
                await asyncio.sleep(job.hold_seconds)
                releasing = host_now_ns()
            records.append((requested, entered, releasing))
    return ("done", os.getpid(), records)


def run_holder(nats_url: str, name: str, ttl: float, results: Queue[Any]) -> None:
    """Process entry: take the slot with a short TTL, say so, then wait to be SIGKILLed."""
    try:
        asyncio.run(_hold(nats_url, name, ttl, results))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


async def _hold(nats_url: str, name: str, ttl: float, results: Queue[Any]) -> None:
    settings = ClientSettings(nats_url=nats_url, unavailable_timeout=10)
    client = AsyncClient(settings, label="doomed-holder")
    async with client, client.concurrency(name, lease_ttl=ttl):
        results.put(("held", os.getpid(), 0))
        await asyncio.sleep(120)  # bounded: the parent kills us long before this


def run_echo(nats_url: str, subject: str, results: Queue[Any]) -> None:
    """Process entry: a bare nats-py responder, the floor any coordinator reply sits on."""
    try:
        asyncio.run(_echo(nats_url, subject, results))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


async def _echo(nats_url: str, subject: str, results: Queue[Any]) -> None:
    nc = await nats.connect(nats_url)

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    results.put(("ready", os.getpid(), 0))
    await asyncio.sleep(600)  # bounded: the parent reaps us when it is done
