"""`gcl up --demo`: demo limits and a small, steady workload, so a newcomer sees leases move.

Two pretend workers (gpu-1, gpu-2) run three jobs each against their own `gpu:{worker_id}` share
of 2 slots, so some jobs always wait; a few tasks share `db`, a loop calls an API through the
`openai` rate limit, and the inactive `dry-run` limit counts what it would have denied. Every
loop sleeps between steps, so the load stays light however long the demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from gcl.cli.limits import role_settings
from gcl.coordinator.settings import CoordinatorSettings
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import CoordinatorUnavailable, GCLError, LimitExists
from gcl.sdk.identity import per_worker
from gcl.sdk.settings import ClientSettings, NatsSettings

log = logging.getLogger("gcl.demo")
READY_TIMEOUT = 30.0
ERROR_PAUSE = 2.0
WORKERS = ("gpu-1", "gpu-2")
JOBS_PER_WORKER = 3
LEASE_TTL = 10.0  # short, so leases left by a hard stop free soon after the next start


@dataclass(frozen=True)
class DemoLimit:
    name: str
    limit: int
    slot_decay_per_second: float = 0.0
    active: bool = True


DEMO_LIMITS = (
    DemoLimit("gpu:{worker_id}", 2),
    DemoLimit("db", 5),
    DemoLimit("openai", 5, slot_decay_per_second=5.0),
    DemoLimit("dry-run", 1, active=False),
)


async def run_demo(settings: CoordinatorSettings) -> None:
    """Create the demo limits, then run the workload until cancelled."""
    nats = role_settings(settings.nats_url, settings.prefix, "operator")
    await _wait_ready(nats)
    await create_demo_limits(nats)
    client_settings = ClientSettings(
        nats_url=settings.nats_url, prefix=settings.prefix, nats_role="operator"
    )
    clients = [
        AsyncClient(client_settings, label="demo", worker_id=worker)
        for worker in (*WORKERS, "demo")
    ]
    try:
        async with asyncio.TaskGroup() as group:
            for client in clients[: len(WORKERS)]:
                for job in range(JOBS_PER_WORKER):
                    group.create_task(_gpu_job(client, job))
            shared = clients[-1]
            for job in range(3):
                group.create_task(_db_job(shared, job))
            group.create_task(_api_calls(shared))
            group.create_task(_dry_run(shared))
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.aclose())


async def _wait_ready(settings: NatsSettings) -> None:
    """`gcl up` starts the demo alongside the coordinator: wait until it answers."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            async with AsyncAdminClient(settings) as admin:
                await admin.ping()
            return
        except CoordinatorUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def create_demo_limits(settings: NatsSettings) -> None:
    """Create what is missing; an operator's earlier changes to a demo limit are kept."""
    async with AsyncAdminClient(settings) as admin:
        for spec in DEMO_LIMITS:
            with contextlib.suppress(LimitExists):
                await admin.create_limit(
                    spec.name,
                    spec.limit,
                    active=spec.active,
                    slot_decay_per_second=spec.slot_decay_per_second,
                )
    names = ", ".join(spec.name for spec in DEMO_LIMITS)
    log.info("demo limits ready: %s; demo workload running", names)


async def _steady(step: Any, pause: tuple[float, float]) -> None:
    """Run `step` for ever with a pause between; errors (a revoked lease...) are logged."""
    while True:
        try:
            await step()
        except GCLError as exc:
            log.info("demo: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(ERROR_PAUSE)
        await asyncio.sleep(random.uniform(*pause))


async def _gpu_job(client: AsyncClient, job: int) -> None:
    name = per_worker("gpu", client.worker_id)

    async def infer() -> None:
        async with client.concurrency(name, label=f"demo job {job}", lease_ttl=LEASE_TTL):
            await asyncio.sleep(random.uniform(1.0, 4.0))

    await _steady(infer, (0.5, 2.0))


async def _db_job(client: AsyncClient, job: int) -> None:
    async def query() -> None:
        occupy = random.randint(1, 3)
        async with client.concurrency("db", occupy, label=f"query {job}", lease_ttl=LEASE_TTL):
            await asyncio.sleep(random.uniform(0.3, 2.5))

    await _steady(query, (0.2, 1.5))


async def _api_calls(client: AsyncClient) -> None:
    async def call() -> None:
        await client.rate_limit("openai")

    await _steady(call, (0.05, 0.3))


async def _dry_run(client: AsyncClient) -> None:
    async def trial() -> None:
        async with (
            client.concurrency("dry-run", label="dry run", lease_ttl=LEASE_TTL),
            client.concurrency("dry-run", label="dry run, over the limit", lease_ttl=LEASE_TTL),
        ):
            await asyncio.sleep(random.uniform(0.5, 1.5))

    await _steady(trial, (2.0, 5.0))
