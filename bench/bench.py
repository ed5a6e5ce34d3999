"""gcl benchmark: latency, throughput, wake-up, crash recovery and rate accuracy in one run.

    .venv/bin/python bench/bench.py [--quick] [--db sqlite|postgres] [--json out.json]
    .venv/bin/python bench/bench.py --sqlite-synchronous FULL,NORMAL,FULL,NORMAL

It starts its own nats-server and a coordinator process on loopback, loads it from separate
client processes, prints each figure beside its target from TARGETS.md, and tears everything
down even on error or Ctrl-C. `--quick` is a smoke run (< 60 s) for CI: its figures are noise.
With several `--sqlite-synchronous` modes it runs everything once per mode, in the order given
(each on a fresh NATS, coordinator and database), and prints the median of each mode side by
side: the cost of durable commits, measured under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
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
from bench.stats import TARGETS, fmt, table, unit_of  # noqa: E402
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
        # Since the release is sent behind the block (issue #13), a block is one round trip.
        one = metrics["nats_rtt_p50_ms"]
        metrics["uncontended_p50_over_1_rtt_ratio"] = metrics["uncontended_p50_ms"] / one
    metrics.update(_over_floor(metrics))
    return metrics


def _over_floor(metrics: dict[str, float]) -> dict[str, float]:
    """CPU per acquire+release at 32 free clients over the floor of two bare request/replies
    under the same load (measure.nats_floor): what gcl's own work costs beyond nats-py's."""
    rate = metrics.get("throughput_32_free_pairs_per_s")
    if not rate:
        return {}
    ratios = {}
    for side, floor_side in (
        ("coordinator", "responder"),
        ("clients", "requesters"),
        ("nats", "nats"),
    ):
        cores = metrics.get(f"throughput_32_free_{side}_cpu_cores")
        floor = metrics.get(f"floor_32_{floor_side}_us_per_request")
        if cores is not None and floor:
            ratios[f"throughput_32_free_{side}_over_floor"] = cores / rate * 1e6 / (2 * floor)
    return ratios


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
    parser.add_argument(
        "--sqlite-synchronous",
        default="FULL",
        metavar="MODES",
        help="SQLite synchronous mode(s) for the coordinator, comma-separated (FULL, NORMAL); "
        "several run one after the other and are compared, e.g. FULL,NORMAL,FULL,NORMAL "
        "[default: FULL, the coordinator's default]",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    args.modes = [m.strip().upper() for m in args.sqlite_synchronous.split(",") if m.strip()]
    if not args.modes or set(args.modes) - {"FULL", "NORMAL"}:
        parser.error("--sqlite-synchronous takes FULL and/or NORMAL, comma-separated")
    if len(set(args.modes)) > 1 and args.db != "sqlite":
        parser.error("comparing --sqlite-synchronous modes needs --db sqlite")
    return args


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # tear down on `kill` as on Ctrl-C
    failures: list[str] = []
    runs: list[tuple[str, dict[str, float]]] = []
    try:
        for index, mode in enumerate(args.modes):
            if len(args.modes) > 1:
                print(f"=== run {index + 1}/{len(args.modes)}: synchronous={mode}", file=sys.stderr)
            began, load_before = time.monotonic(), os.getloadavg()[0]
            metrics = _execute(args, mode, failures)
            elapsed, load = time.monotonic() - began, (load_before, os.getloadavg()[0])
            runs.append((mode, metrics))
            print(table(metrics))
            print(
                f"\n{len(metrics)} figures in {elapsed:.1f}s "
                f"({'quick' if args.quick else 'full'} run, synchronous={mode}); 1-min load "
                f"average {load[0]:.1f} before, {load[1]:.1f} after on {os.cpu_count()} CPUs "
                "(other work on this host makes the figures noisy)\n"
            )
            if args.json:
                report = _report(metrics, args, mode, elapsed, load) | {"failures": failures}
                _json_path(args.json, mode, index, len(args.modes)).write_text(
                    json.dumps(report, indent=2)
                )
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: tearing down", file=sys.stderr)
        return 130
    if len(set(args.modes)) > 1:
        print(compare(runs))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def _json_path(path: Path, mode: str, index: int, count: int) -> Path:
    """One file per run: out.json, or out.full.1.json, out.normal.2.json... for several."""
    if count == 1:
        return path
    return path.with_name(f"{path.stem}.{mode.lower()}.{index + 1}{path.suffix}")


def compare(runs: list[tuple[str, dict[str, float]]]) -> str:
    """Median of each mode side by side, and the first mode's over the second's."""
    modes = list(dict.fromkeys(mode for mode, _ in runs))
    first, second = modes[0], modes[1]
    names = list(dict.fromkeys(name for _, metrics in runs for name in metrics))
    medians = {
        mode: {
            name: statistics.median(values)
            for name in names
            if (values := [m[name] for md, m in runs if md == mode and name in m])
        }
        for mode in modes
    }
    width = max(len(name) for name in names)
    counts = ", ".join(f"{sum(md == mode for md, _ in runs)} x {mode}" for mode in modes)
    lines = [
        f"medians over {counts}",
        f"{'metric':<{width}}  " + "".join(f"{mode:>10}  " for mode in modes) + "ratio  unit",
        "-" * (width + 12 * len(modes) + 14),
    ]
    for name in names:
        row = [medians[mode].get(name) for mode in modes]
        a, b = medians[first].get(name), medians[second].get(name)
        ratio = f"{a / b:5.2f}" if a is not None and b else "    -"
        shown = "".join(f"{fmt(v) if v is not None else '-':>10}  " for v in row)
        lines.append(f"{name:<{width}}  {shown}{ratio}  {unit_of(name)}")
    return "\n".join(lines)


def _execute(args: argparse.Namespace, mode: str, failures: list[str]) -> dict[str, float]:
    """Start NATS, run the sections, and always reap children and stop the servers."""
    plan = Plan.quick() if args.quick else Plan()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(args.db, args.coordinator_prefix, mode)
        cluster.start_nats()
        return asyncio.run(run(cluster, plan, args.only, failures))
    finally:
        measure.reap_all()
        if cluster is not None:
            cluster.close()


def _report(
    metrics: dict[str, float],
    args: argparse.Namespace,
    mode: str,
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
            "sqlite_synchronous": mode if args.db == "sqlite" else None,
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
