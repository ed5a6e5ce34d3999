"""gcl benchmark: latency, throughput, wake-up, crash recovery and rate accuracy in one run.

    .venv/bin/python bench/bench.py [--quick] [--db sqlite|postgres] [--json out.json]

It starts its own nats-server and a coordinator process on loopback, loads it from separate
client processes, prints each figure beside its target from TARGETS.md, and tears everything
down even on error or Ctrl-C. `--quick` is a smoke run (< 60 s) for CI: its figures are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts bench/ first on the path, where `bench` would mean this file.
# Put the repo root there instead, so `bench.*` resolves here and in spawned children.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from bench import measure  # noqa: E402
from bench.harness import BenchError, Cluster  # noqa: E402
from bench.measure import Plan  # noqa: E402
from bench.stats import TARGETS, table  # noqa: E402
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402

SECTIONS = ("floor", "latency", "throughput", "wakeup", "rate", "holder_kill", "restart")
Section = Callable[[Cluster, AsyncAdminClient, AsyncAdminClient, Plan], Awaitable[dict[str, float]]]


def _sections() -> dict[str, Section]:
    """Order matters: the quiet latency run first, the coordinator kill -9 last."""
    return {
        "floor": lambda c, _a, _p, plan: measure.nats_floor(c, plan),
        "latency": lambda c, a, _p, plan: measure.uncontended(c, a, plan),
        "throughput": lambda c, a, _p, plan: measure.all_throughput(c, a, plan),
        "wakeup": lambda c, a, _p, plan: measure.wakeup(c, a, plan),
        "rate": lambda c, a, _p, plan: measure.rate_limit(c, a, plan),
        "holder_kill": lambda c, a, _p, plan: measure.holder_kill(c, a, plan),
        "restart": measure.coordinator_restart,
    }


async def run(
    cluster: Cluster, plan: Plan, only: list[str], failures: list[str]
) -> dict[str, float]:
    """Run the chosen sections in order; a section that fails is listed in `failures`."""
    metrics: dict[str, float] = {}
    async with (
        AsyncAdminClient(cluster.settings()) as admin,
        AsyncAdminClient(cluster.settings(request_timeout=0.5)) as pinger,
    ):
        launched = time.monotonic()
        cluster.launch()
        metrics["coordinator_start_empty_s"] = await cluster.wait_ready(pinger) - launched
        for name, section in _sections().items():
            if name not in only:
                continue
            print(f"... {name}", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                metrics.update(await section(cluster, admin, pinger, plan))
            except BenchError as exc:  # report it, and still show what the others measured
                failures.append(f"{name}: {exc}")
                print(f"    {name} FAILED: {exc}", file=sys.stderr)
                continue
            print(f"    {name} took {time.monotonic() - started:.1f}s", file=sys.stderr)
    if "nats_rtt_p50_ms" in metrics and "uncontended_p50_ms" in metrics:
        # An acquire plus a release is two round trips: how far above that floor we are.
        floor = 2 * metrics["nats_rtt_p50_ms"]
        metrics["uncontended_p50_over_2_rtt_ratio"] = metrics["uncontended_p50_ms"] / floor
    return metrics


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI smoke run (< 60 s)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--coordinator-prefix",
        default="",
        help="command to wrap the coordinator in, e.g. 'py-spy record -o prof.svg --'",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    return args


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # tear down on `kill` as on Ctrl-C
    began, load_before = time.monotonic(), os.getloadavg()[0]
    failures: list[str] = []
    try:
        metrics = _execute(args, failures)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: tearing down", file=sys.stderr)
        return 130
    elapsed, load = time.monotonic() - began, (load_before, os.getloadavg()[0])
    print(table(metrics))
    print(
        f"\n{len(metrics)} figures in {elapsed:.1f}s ({'quick' if args.quick else 'full'} run); "
        f"1-min load average {load[0]:.1f} before, {load[1]:.1f} after on {os.cpu_count()} CPUs "
        "(other work on this host makes the figures noisy)"
    )
    if args.json:
        report = _report(metrics, args, elapsed, load) | {"failures": failures}
        args.json.write_text(json.dumps(report, indent=2))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def _execute(args: argparse.Namespace, failures: list[str]) -> dict[str, float]:
    """Start NATS, run the sections, and always reap children and stop the servers."""
    plan = Plan.quick() if args.quick else Plan()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(args.db, args.coordinator_prefix)
        cluster.start_nats()
        return asyncio.run(run(cluster, plan, args.only, failures))
    finally:
        measure.reap_all()
        if cluster is not None:
            cluster.close()


def _report(
    metrics: dict[str, float],
    args: argparse.Namespace,
    elapsed: float,
    load: tuple[float, float],
) -> dict[str, object]:
    return {
        "metrics": metrics,
        "targets": {
            name: {"text": t.text, "met": t.met(metrics[name])}
            for name, t in TARGETS.items()
            if name in metrics
        },
        "meta": {
            "quick": args.quick,
            "db": args.db,
            "python": platform.python_version(),
            "elapsed_s": round(elapsed, 1),
            "cpus": os.cpu_count(),
            "load_average_before": load[0],
            "load_average_after": load[1],
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
