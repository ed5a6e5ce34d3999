"""Many pipeline runs per worker; only the GPU step is limited, per worker.

Each run is its own OS process, as a worker's runs are in production: it downloads (not
limited), infers while holding one slot of its worker's `gpu:{WORKER_ID}` limit, then saves
(not limited). Every phase's start and end go to a shared file; the report at the end says how
many infers ran at once on each worker (never above its limit), how many downloads overlapped
(far more: they are not limited) and the total time against running everything one at a time.

Before running it, start a coordinator and create the per-worker template once:

    gcl up                                      # in another shell
    gcl create 'gpu:{worker_id}' --limit 2
    python examples/per_worker_pipeline.py --workers gpu-1,gpu-2 --runs 6

As one worker among several machines or containers, set WORKER_ID instead of --workers:

    WORKER_ID=gpu-1 python examples/per_worker_pipeline.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from gcl.asyncio import concurrency, get_client
from gcl.protocol.names import template_matches
from gcl.sdk.admin import AdminClient
from gcl.sdk.exceptions import (
    CoordinatorUnavailable,
    GCLError,
    LeaseLost,
    LimitNotFound,
    PermissionDenied,
)
from gcl.sdk.identity import per_worker, worker_id
from gcl.sdk.settings import NatsSettings

START_TIMEOUT = 120.0  # seconds the runs of a round wait for each other to start together
SLACK = 120.0  # seconds a round may take beyond its serialized time before it is stopped


@dataclass(frozen=True)
class Job:
    """One pipeline run: which worker it belongs to and how long each phase takes."""

    worker: str
    run: int
    resource: str
    download: float
    infer: float
    save: float
    phases: str


# --- one run, in its own process -----------------------------------------------------------


def run_one(job: Job, start_together: Barrier) -> None:
    """Entry point of a run's process: become a run of `job.worker`, then do the pipeline."""
    os.environ["WORKER_ID"] = job.worker
    with contextlib.suppress(threading.BrokenBarrierError):
        start_together.wait(START_TIMEOUT)  # broken if a sibling failed to start: run anyway
    try:
        asyncio.run(pipeline(job))
    except GCLError as exc:  # the message says what to do; a traceback per run would not
        print(f"{job.worker} run {job.run}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, CoordinatorUnavailable) else 1)


async def pipeline(job: Job) -> None:
    try:
        await phase(job, "download", job.download)
        await infer(job)
        await phase(job, "save", job.save)
    finally:
        await get_client().aclose()


async def infer(job: Job) -> None:
    """The limited step. Times are taken inside the block, while the slot is surely held."""
    started = ended = time.time()
    try:
        # strict: a worker with no limit is an error, not a free-for-all
        async with concurrency(per_worker(job.resource), occupy=1, strict=True):
            started = time.time()
            await asyncio.sleep(job.infer)
            ended = time.time()
    except LeaseLost as exc:  # revoked by an operator, or the limit was deleted
        record(job, "lost", started, time.time())
        print(f"{job.worker} run {job.run}: infer lost its slot: {exc}", file=sys.stderr)
        return
    record(job, "infer", started, ended)


async def phase(job: Job, name: str, seconds: float) -> None:
    """Stand-in for real, unlimited work: sleeps, and records when it ran."""
    start = time.time()
    await asyncio.sleep(seconds)
    record(job, name, start, time.time())


def record(job: Job, phase_name: str, start: float, end: float) -> None:
    line = json.dumps(
        {"worker": job.worker, "run": job.run, "phase": phase_name, "start": start, "end": end}
    )
    # One small O_APPEND write per line: lines from many processes never interleave.
    fd = os.open(job.phases, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# --- the report ----------------------------------------------------------------------------


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant; one ending as another starts does not overlap."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda edge: (edge[0], edge[1]),
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def read_phases(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spans(phases: list[dict[str, Any]], name: str, worker: str | None = None) -> list[Any]:
    return [
        (p["start"], p["end"])
        for p in phases
        if p["phase"] == name and (worker is None or p["worker"] == worker)
    ]


def build_report(
    phases: list[dict[str, Any]], workers: Sequence[str], limits: dict[str, int | None]
) -> dict[str, Any]:
    per_worker_figures: dict[str, dict[str, Any]] = {
        worker: {
            "runs": len({p["run"] for p in phases if p["worker"] == worker}),
            "limit": limits.get(worker),
            "max_infers_at_once": max_overlap(spans(phases, "infer", worker)),
            "max_downloads_at_once": max_overlap(spans(phases, "download", worker)),
            "lost": len(spans(phases, "lost", worker)),
        }
        for worker in workers
    }
    work = [p for p in phases if p["phase"] != "lost"]
    total = max((p["end"] for p in work), default=0.0) - min((p["start"] for p in work), default=0)
    return {
        "workers": per_worker_figures,
        "max_downloads_at_once": max_overlap(spans(phases, "download")),
        "total_seconds": round(total, 3),
        "serialized_seconds": round(sum(p["end"] - p["start"] for p in work), 3),
        "within_limits": all(
            figures["limit"] is None or figures["max_infers_at_once"] <= figures["limit"]
            for figures in per_worker_figures.values()
        ),
    }


def print_report(report: dict[str, Any], resource: str) -> None:
    print(f"\n{'worker':<12}{'runs':>6}{'limit':>8}{'max infers':>13}{'max downloads':>16}")
    for worker, figures in report["workers"].items():
        limit = "?" if figures["limit"] is None else figures["limit"]
        print(
            f"{worker:<12}{figures['runs']:>6}{limit:>8}{figures['max_infers_at_once']:>13}"
            f"{figures['max_downloads_at_once']:>16}"
            + (f"   ({figures['lost']} run(s) lost their slot)" if figures["lost"] else "")
        )
    verdict = "never above" if report["within_limits"] else "ABOVE"
    print(f"\ninfers at once per worker: {verdict} its {resource}:<worker> limit")
    print(f"downloads overlapping (not limited): up to {report['max_downloads_at_once']}")
    total, serialized = report["total_seconds"], report["serialized_seconds"]
    speedup = serialized / total if total else 0.0
    print(f"total {total:.1f}s vs {serialized:.1f}s serialized ({speedup:.1f}x faster)")


# --- the parent: check limits, start runs, report ------------------------------------------


def check_limits(settings: NatsSettings, resource: str, workers: Sequence[str]) -> None:
    """Refuse to start runs that would find no limit: say which command creates it."""
    try:
        with AdminClient(settings) as admin:
            limits = admin.list_limits()
    except PermissionDenied:
        return  # a worker's credential may not read limits; the runs' strict=True still checks
    names = {info.name for info in limits}
    templates = [info.name for info in limits if info.is_template]
    for worker in workers:
        name = per_worker(resource, worker)
        if name not in names and not any(template_matches(t, name) for t in templates):
            raise LimitNotFound(
                f"no limit {name!r} and no template for it: create one with "
                f"gcl create '{resource}:{{worker_id}}' --limit 2"
            )


def worker_limits(
    settings: NatsSettings, resource: str, workers: Sequence[str]
) -> dict[str, int | None]:
    """Each worker's limit as it stands after the round (created from the template)."""
    found: dict[str, int | None] = dict.fromkeys(workers)
    with contextlib.suppress(PermissionDenied), AdminClient(settings) as admin:
        for worker in workers:
            try:
                found[worker] = admin.get_limit(per_worker(resource, worker)).limit.limit
            except LimitNotFound:
                found[worker] = None
    return found


def run_round(args: argparse.Namespace, workers: Sequence[str], phases: Path) -> list[int]:
    """Start every run of every worker as its own process; return their exit codes."""
    context = multiprocessing.get_context("spawn")
    jobs = [
        Job(w, run, args.resource, args.download, args.infer, args.save, str(phases))
        for w in workers
        for run in range(1, args.runs + 1)
    ]
    start_together = context.Barrier(len(jobs))
    processes = [context.Process(target=run_one, args=(job, start_together)) for job in jobs]
    for process in processes:
        process.start()
    deadline = time.monotonic() + SLACK + len(jobs) * (args.download + args.infer + args.save)
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(10)
    return [process.exitcode if process.exitcode is not None else -1 for process in processes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="comma-separated worker ids to simulate, e.g. gpu-1,gpu-2 "
        "[default: $WORKER_ID, else the host name]",
    )
    parser.add_argument("--runs", type=int, default=6, help="runs per worker [6]")
    parser.add_argument("--download", type=float, default=1.0, help="download seconds [1.0]")
    parser.add_argument("--infer", type=float, default=2.0, help="infer seconds [2.0]")
    parser.add_argument("--save", type=float, default=0.5, help="save seconds [0.5]")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of runs; 0 repeats until Ctrl-C [1]"
    )
    parser.add_argument("--resource", default="gpu", help="limit name before ':<worker id>' [gpu]")
    parser.add_argument("--nats", default=None, help="NATS URL [$GCL_NATS_URL]")
    parser.add_argument("--phases", type=Path, default=None, help="file to record phases in")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rounds < 0:
        parser.error("--runs must be at least 1 and --rounds at least 0")
    if min(args.download, args.infer, args.save) < 0:
        parser.error("phase durations cannot be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nats:
        os.environ["GCL_NATS_URL"] = args.nats  # the runs' processes inherit it
    settings = NatsSettings(nats_role="observer")  # reads limits; the runs act as workers
    workers = [w.strip() for w in (args.workers or worker_id()).split(",") if w.strip()]
    try:
        check_limits(settings, args.resource, workers)
        round_number = 0
        while args.rounds == 0 or round_number < args.rounds:
            round_number += 1
            code = one_round(args, workers, settings)
            if code:
                return code
    except GCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CoordinatorUnavailable) else 1
    return 0


def one_round(args: argparse.Namespace, workers: Sequence[str], settings: NatsSettings) -> int:
    with tempfile.TemporaryDirectory(prefix="gcl-pipeline-") as folder:
        phases = args.phases or Path(folder) / "phases.jsonl"
        phases.unlink(missing_ok=True)
        if not args.json:
            print(f"{args.runs} run(s) on each of {', '.join(workers)}: download -> infer -> save")
        codes = run_round(args, workers, phases)
        report = build_report(
            read_phases(phases), workers, worker_limits(settings, args.resource, workers)
        )
    report["failed_runs"] = sum(1 for code in codes if code != 0)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args.resource)
    if report["failed_runs"]:
        print(f"error: {report['failed_runs']} run(s) failed; see above", file=sys.stderr)
        return 1
    return 0 if report["within_limits"] else 3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
