"""Percentiles, the targets from TARGETS.md, and the verdict printed beside each figure.

Kept apart from the measuring code so a figure and its target are defined in one place: the
table, the JSON and docs/benchmarks.md all name metrics the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: no interpolation, so p99 of 200 samples is a real sample."""
    if not values:
        raise ValueError("percentile of no samples: the measurement produced nothing")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values_ms: Sequence[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": percentile(values_ms, 50),
        f"{prefix}_p90_ms": percentile(values_ms, 90),
        f"{prefix}_p99_ms": percentile(values_ms, 99),
        f"{prefix}_max_ms": max(values_ms),
    }


@dataclass(frozen=True)
class Target:
    """Met when value <= bound ("max"), value >= bound ("min"), |value - 1| <= bound ("ratio")."""

    bound: float
    kind: str
    text: str

    def met(self, value: float) -> bool:
        if self.kind == "max":
            return value <= self.bound
        if self.kind == "min":
            return value >= self.bound
        return abs(value - 1.0) <= self.bound


TARGETS: dict[str, Target] = {
    "uncontended_p50_ms": Target(1.0, "max", "≤ 1 ms"),
    "uncontended_p99_ms": Target(3.0, "max", "≤ 3 ms"),
    "throughput_32_free_pairs_per_s": Target(3000.0, "min", "≥ 3,000/s"),
    "wakeup_p99_ms": Target(5.0, "max", "≤ 5 ms"),
    # TTL 2 s + 1 s; the coordinator restart target is absolute.
    "holder_kill_recovery_s": Target(3.0, "max", "≤ TTL + 1 s = 3 s"),
    "coordinator_restart_1000_leases_s": Target(2.0, "max", "≤ 2 s"),
    "rate_limit_ratio": Target(0.02, "ratio", "1.00 ± 0.02"),
    "coordinator_idle_rss_mb": Target(60.0, "max", "≤ 60 MB"),  # bench/memory.py
}

UNITS = (
    ("_us_per_pair", "µs"),
    ("_cpu_cores", "cores"),
    ("_per_s", "/s"),
    ("_ms", "ms"),
    ("_s", "s"),
    ("_ratio", "x"),
    ("_mb", "MB"),
)


def unit_of(metric: str) -> str:
    for suffix, unit in UNITS:
        if metric.endswith(suffix):
            return unit
    return ""


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def verdict(metric: str, value: float) -> str:
    target = TARGETS.get(metric)
    if target is None:
        return ""
    return f"(target {target.text}) {'OK' if target.met(value) else 'MISS'}"


def table(metrics: dict[str, float]) -> str:
    width = max(len(name) for name in metrics) if metrics else 10
    lines = [f"{'metric':<{width}}  {'value':>10}  unit  vs target", "-" * (width + 40)]
    for name, value in metrics.items():
        unit = unit_of(name)
        lines.append(f"{name:<{width}}  {fmt(value):>10}  {unit:<5}  {verdict(name, value)}")
    return "\n".join(lines)
