"""The benchmark still runs end to end: `bench/bench.py --quick --json` yields every figure.

No timing is asserted (the figures of a quick run on a shared machine are noise); what breaks
this test is a benchmark that crashes, hangs, leaks processes or silently drops a measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = [
    "coordinator_start_empty_s",
    "nats_rtt_p50_ms",
    "uncontended_p50_ms",
    "uncontended_p90_ms",
    "uncontended_p99_ms",
    "uncontended_max_ms",
    "uncontended_p50_over_2_rtt_ratio",
    "uncontended_p50_over_1_rtt_ratio",
    "floor_32_requests_per_s",
    "floor_32_responder_us_per_request",
    "floor_32_nats_us_per_request",
    "floor_32_requesters_us_per_request",
    "throughput_32_free_coordinator_over_floor",
    "throughput_32_free_clients_over_floor",
    "throughput_32_free_nats_over_floor",
    *(
        f"throughput_{n}_{kind}_{figure}"
        for n, kind in ((1, "free"), (8, "free"), (8, "busy"), (32, "free"), (32, "busy"))
        for figure in ("pairs_per_s", "coordinator_cpu_cores", "coordinator_us_per_pair")
    ),
    "wakeup_p50_ms",
    "wakeup_p99_ms",
    "wakeup_samples",
    "rate_limit_achieved_per_s",
    "rate_limit_ratio",
    "holder_kill_recovery_s",
    "coordinator_restart_ping_s",
    "coordinator_restart_1000_leases_s",
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_reports_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,  # not the repo root: the script must find its own modules
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    missing = [name for name in EXPECTED if name not in metrics]
    assert not missing, f"metrics missing from the report: {missing}"
    bad = {k: v for k, v in metrics.items() if not (isinstance(v, int | float) and v > 0)}
    assert not bad, f"metrics that are not positive numbers: {bad}"
    assert set(report["targets"]) >= {"uncontended_p50_ms", "throughput_32_free_pairs_per_s"}
    assert report["meta"]["quick"] is True


def test_bench_rejects_an_unknown_section() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--only", "latency,bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "bogus" in done.stderr


def test_percentile_is_nearest_rank() -> None:
    from bench.stats import percentile

    samples = [float(v) for v in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_targets_judge_each_direction() -> None:
    from bench.stats import TARGETS, verdict

    assert TARGETS["uncontended_p50_ms"].met(0.9)
    assert not TARGETS["uncontended_p50_ms"].met(1.1)
    assert TARGETS["throughput_32_free_pairs_per_s"].met(3100)
    assert not TARGETS["throughput_32_free_pairs_per_s"].met(2900)
    assert TARGETS["rate_limit_ratio"].met(0.985)
    assert not TARGETS["rate_limit_ratio"].met(1.03)
    assert verdict("wakeup_p99_ms", 6.0).endswith("MISS")
    assert verdict("not_a_target", 1.0) == ""


def test_handoff_counts_only_waiters_blocked_at_the_release() -> None:
    from bench.measure import handoff_latencies_ms

    ms = 1_000_000
    holder = [(0, 1 * ms, 10 * ms), (12 * ms, 20 * ms, 30 * ms)]
    waiter = [
        (5 * ms, 12 * ms, 19 * ms),  # asked at 5, holder released at 10: blocked, 2 ms
        (31 * ms, 32 * ms, 40 * ms),  # asked after the release at 30: never blocked
    ]
    assert handoff_latencies_ms(waiter, holder) == [2.0]


def test_bench_compares_sqlite_synchronous_modes() -> None:
    from bench.bench import _parse, compare

    runs = [
        ("FULL", {"uncontended_p50_ms": 2.0}),
        ("NORMAL", {"uncontended_p50_ms": 1.0}),
        ("FULL", {"uncontended_p50_ms": 4.0}),
        ("NORMAL", {"uncontended_p50_ms": 1.0}),
    ]
    text = compare(runs)
    assert "medians over 2 x FULL, 2 x NORMAL" in text
    assert text.splitlines()[-1].split() == ["uncontended_p50_ms", "3.00", "1.00", "3.00", "ms"]
    assert _parse(["--sqlite-synchronous", "full,normal"]).modes == ["FULL", "NORMAL"]
    with pytest.raises(SystemExit):
        _parse(["--sqlite-synchronous", "OFF"])
    with pytest.raises(SystemExit):
        _parse(["--db", "postgres", "--sqlite-synchronous", "FULL,NORMAL"])


@pytest.mark.slow
def test_memory_bench_measures_an_idle_coordinator(tmp_path: Path) -> None:
    """`bench/memory.py --idle-only`: a real `gcl serve` started, read, and stopped (no figure
    asserted but that there is one: the 60 MB target is the benchmark's verdict)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory.py"), "--idle-only"],
        cwd=tmp_path,  # not the repo root: the script must find its own modules
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "idle: `gcl serve` on SQLite" in result.stdout and "MB RSS" in result.stdout


def test_cpu_is_compared_with_twice_the_floor_of_a_bare_request() -> None:
    from bench.bench import _over_floor

    metrics = {
        "throughput_32_free_pairs_per_s": 2000.0,
        "throughput_32_free_coordinator_cpu_cores": 0.4,  # 200 µs per pair
        "throughput_32_free_clients_cpu_cores": 0.2,  # 100 µs per pair
        "throughput_32_free_nats_cpu_cores": 0.1,
        "floor_32_responder_us_per_request": 25.0,
        "floor_32_requesters_us_per_request": 50.0,
    }  # no NATS floor: no NATS ratio
    assert _over_floor(metrics) == pytest.approx(
        {
            "throughput_32_free_coordinator_over_floor": 4.0,
            "throughput_32_free_clients_over_floor": 1.0,
        }
    )
    assert _over_floor({"floor_32_responder_us_per_request": 25.0}) == {}
