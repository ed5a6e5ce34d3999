"""The per-worker pipeline example, scaled down, against a real coordinator.

Its report is checked, and the facts are recomputed from the phases file independently of the
example's own arithmetic: infers per worker never above the limit, downloads well above it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "per_worker_pipeline.py"


async def run_example(*args: str, timeout: float = 180) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WORKER_ID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant, by brute force over every start."""
    return max(
        (sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals), default=0
    )


def phase_spans(phases: list[dict[str, Any]], name: str, worker: str | None = None) -> list[Any]:
    return [
        (p["start"], p["end"])
        for p in phases
        if p["phase"] == name and worker in (None, p["worker"])
    ]


@pytest.mark.slow
async def test_pipeline_keeps_each_worker_within_its_own_limit(
    nats_server: NatsServer, coordinator: Coordinator, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    await admin.create_limit("gpu:{worker_id}", 2)
    phases_file = tmp_path / "phases.jsonl"
    code, out, err = await run_example(
        "--nats", nats_server.url, "--workers", "gpu-1,gpu-2", "--runs", "4",
        "--download", "0.8", "--infer", "0.6", "--save", "0.1",
        "--phases", str(phases_file), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    phases = [json.loads(line) for line in phases_file.read_text().splitlines()]
    assert len(phase_spans(phases, "infer")) == 8 and report["failed_runs"] == 0
    for worker in ("gpu-1", "gpu-2"):
        figures = report["workers"][worker]
        assert figures["limit"] == 2 and figures["runs"] == 4
        infers = overlap(phase_spans(phases, "infer", worker))
        assert infers == figures["max_infers_at_once"]
        assert 1 <= infers <= 2
        limit = (await admin.get_limit(f"gpu:{worker}")).limit
        assert (limit.limit, limit.is_template, limit.held) == (2, False, 0)
    downloads = overlap(phase_spans(phases, "download"))
    assert downloads == report["max_downloads_at_once"] and downloads > 2
    assert report["within_limits"] is True
    assert report["total_seconds"] < report["serialized_seconds"]


@pytest.mark.slow
async def test_human_report_names_the_facts(
    nats_server: NatsServer, coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("gpu:{worker_id}", 1)
    code, out, err = await run_example(
        "--nats", nats_server.url, "--workers", "w-a", "--runs", "2",
        "--download", "1.0", "--infer", "0.2", "--save", "0",
    )  # fmt: skip
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("w-a "))
    assert row.split() == ["w-a", "2", "1", "1", "2"]  # runs, limit, max infers, max downloads
    assert "never above" in out and "serialized" in out


async def test_refuses_to_run_without_a_limit_for_the_worker(
    nats_server: NatsServer, coordinator: Coordinator
) -> None:
    code, _, err = await run_example("--nats", nats_server.url, "--workers", "gpu-1")
    assert code == 1
    assert "gcl create 'gpu:{worker_id}' --limit 2" in err


async def test_no_coordinator_exits_2(nats_server: NatsServer) -> None:
    code, _, err = await run_example("--nats", nats_server.url, "--workers", "gpu-1")
    assert code == 2 and "gcl up" in err


async def test_help_explains_setup_and_flags() -> None:
    code, out, _ = await run_example("--help")
    assert code == 0
    for text in ("gcl create 'gpu:{worker_id}'", "--workers", "--runs", "--infer", "WORKER_ID"):
        assert text in out


async def test_bad_flags_are_refused() -> None:
    code, _, err = await run_example("--runs", "0")
    assert code == 2 and "--runs" in err
