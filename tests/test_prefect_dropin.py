"""Code written for Prefect's concurrency API runs on gcl with only its import line changed.

Each program below is written against `prefect.concurrency.asyncio` / `.sync` as Prefect
documents them: positional calls in Prefect's order, `except TimeoutError`, `holder=`, empty
names, `rate_limit`. The test swaps the import line and nothing else, then runs the program in
its own interpreter against a live coordinator.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gcl import asyncio as gcl_asyncio
from gcl import sync as gcl_sync
from gcl.sdk import AcquireTimeout, AsyncAdminClient
from tests.conftest import ROOT

PREFECT_ASYNC = """
import asyncio, dataclasses, os, uuid
from prefect.concurrency.asyncio import concurrency, rate_limit

@dataclasses.dataclass
class ConcurrencyLeaseHolder:  # the shape of prefect.client.schemas.objects'
    type: str
    id: uuid.UUID

worker_id = os.environ["WORKER_ID"]

async def main():
    async with concurrency(f"gpu:{worker_id}", occupy=1):
        print("seed pattern ok")
    # Prefect's positional order: names, occupy, timeout_seconds, max_retries, lease_duration,
    # strict, holder
    async with concurrency("db", 2, 5.0, 3, 60.0, True):
        print("positional ok")
    holder = ConcurrencyLeaseHolder(type="task_run", id=uuid.UUID(int=7))
    async with concurrency("db", occupy=1, holder=holder, lease_duration=30):
        print("holder ok")
    async with concurrency([], occupy=1):
        print("empty names ok")
    async with concurrency("full", occupy=1):
        try:
            async with concurrency("full", occupy=1, timeout_seconds=0.2):
                print("should not get here")
        except TimeoutError:
            print("timeout caught")
    await rate_limit("openai")
    await rate_limit("openai", 1, 5.0)
    await rate_limit([])
    print("rate ok")

asyncio.run(main())
"""

PREFECT_SYNC = """
import os
from prefect.concurrency.sync import concurrency, rate_limit

worker_id = os.environ["WORKER_ID"]
with concurrency(f"gpu:{worker_id}", occupy=1):
    print("seed pattern ok")
with concurrency("db", 2, 5.0, None, 60.0, True, {"type": "flow_run", "id": "abc"}):
    print("positional ok")
with concurrency("full", occupy=1):
    try:
        with concurrency("full", 1, 0.2):
            print("should not get here")
    except TimeoutError:
        print("timeout caught")
rate_limit("openai", occupy=1)
print("rate ok")
"""

ASYNC_LINES = ["seed pattern ok", "positional ok", "holder ok", "empty names ok"]
ASYNC_LINES += ["timeout caught", "rate ok"]
SYNC_LINES = ["seed pattern ok", "positional ok", "timeout caught", "rate ok"]


def ported(source: str) -> str:
    """The one change a user makes: the import line."""
    lines = source.splitlines()
    changed = [i for i, line in enumerate(lines) if line.startswith("from prefect.concurrency")]
    assert len(changed) == 1
    lines[changed[0]] = lines[changed[0]].replace("from prefect.concurrency.", "from gcl.")
    return "\n".join(lines)


async def run_program(source: str, url: str, cwd: Path) -> list[str]:
    env = {**os.environ, "GCL_NATS_URL": url, "WORKER_ID": "gpu-9", "PYTHONPATH": str(ROOT)}
    result = await asyncio.to_thread(  # the coordinator runs on this test's event loop
        subprocess.run,
        [sys.executable, "-c", ported(source)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


async def prepare(admin: AsyncAdminClient) -> None:
    await admin.create_limit("gpu:{worker_id}", 2)
    await admin.create_limit("db", 5)
    await admin.create_limit("full", 1)
    await admin.create_limit("openai", 10, slot_decay_per_second=50.0)


@pytest.mark.slow
async def test_async_prefect_code_runs_with_only_the_import_changed(
    coordinator, admin: AsyncAdminClient, nats_server, tmp_path: Path
):
    await prepare(admin)
    assert await run_program(PREFECT_ASYNC, nats_server.url, tmp_path) == ASYNC_LINES
    events = [limit.name for limit in await admin.list_limits()]
    assert "gpu:gpu-9" in events  # the seed pattern's per-worker limit was made from the template


@pytest.mark.slow
async def test_sync_prefect_code_runs_with_only_the_import_changed(
    coordinator, admin: AsyncAdminClient, nats_server, tmp_path: Path
):
    await prepare(admin)
    assert await run_program(PREFECT_SYNC, nats_server.url, tmp_path) == SYNC_LINES


def test_positional_order_is_prefects_and_our_options_are_keyword_only():
    prefect = ["names", "occupy", "timeout_seconds", "max_retries", "lease_duration", "strict"]
    prefect += ["holder"]
    for face in (gcl_asyncio.concurrency, gcl_sync.concurrency):
        params = inspect.signature(face).parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        keyword = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        assert positional == prefect
        assert {"lease_ttl", "label"} <= keyword
    for face in (gcl_asyncio.rate_limit, gcl_sync.rate_limit):
        params = inspect.signature(face).parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == ["names", "occupy", "timeout_seconds", "strict"]


def test_acquire_timeout_is_a_timeout_error():
    assert issubclass(AcquireTimeout, TimeoutError)


async def test_the_holder_is_shown_on_the_lease(
    coordinator, admin: AsyncAdminClient, nats_server, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GCL_NATS_URL", nats_server.url)
    await admin.create_limit("db", 5)
    holder = {"type": "task_run", "id": "0f0e"}
    async with gcl_asyncio.concurrency("db", holder=holder, label="nightly"):
        (lease,) = await admin.list_leases("db")
    assert lease.holder.label == "nightly task_run:0f0e"
