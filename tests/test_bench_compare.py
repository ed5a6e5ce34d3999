"""bench/compare.py's pure parts: derived figures, medians and ratios, the table, machine facts.

Fast, no servers: running two checkouts end to end takes minutes and is done by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import (
    Row,
    cpu_model,
    derive,
    packaging_hash,
    render,
    rows,
    schedule,
    uncommitted,
)


def test_derive_adds_cpu_per_pair_and_rtt_ratios() -> None:
    metrics = {
        "nats_rtt_p50_ms": 0.5,
        "uncontended_p50_ms": 1.5,
        "throughput_8_free_pairs_per_s": 2000.0,
        "throughput_8_free_clients_cpu_cores": 1.0,
        "throughput_8_free_nats_cpu_cores": 0.4,
    }
    out = derive(metrics)
    assert out["throughput_8_free_clients_us_per_pair"] == pytest.approx(500.0)
    assert out["throughput_8_free_nats_us_per_pair"] == pytest.approx(200.0)
    assert out["uncontended_p50_over_1_rtt_ratio"] == pytest.approx(3.0)
    assert out["uncontended_p50_over_2_rtt_ratio"] == pytest.approx(1.5)
    assert list(out) == [  # each derived figure beside what it derives from
        "nats_rtt_p50_ms",
        "uncontended_p50_ms",
        "uncontended_p50_over_2_rtt_ratio",
        "uncontended_p50_over_1_rtt_ratio",
        "throughput_8_free_pairs_per_s",
        "throughput_8_free_clients_cpu_cores",
        "throughput_8_free_clients_us_per_pair",
        "throughput_8_free_nats_cpu_cores",
        "throughput_8_free_nats_us_per_pair",
    ]
    assert "throughput_8_free_clients_us_per_pair" not in metrics  # the input is untouched


def test_derive_skips_missing_inputs_and_keeps_reported_figures() -> None:
    metrics = {
        "uncontended_p50_ms": 1.5,  # no floor section: no RTT ratio
        "throughput_1_free_pairs_per_s": 0.0,  # nothing done: no division by zero
        "throughput_1_free_clients_cpu_cores": 0.2,
        "throughput_32_busy_pairs_per_s": 100.0,  # no CPU figures (an older commit)
    }
    assert derive(metrics) == metrics
    reported = {
        "nats_rtt_p50_ms": 0.5,
        "uncontended_p50_ms": 1.0,
        "uncontended_max_ms": 3.0,
        "throughput_1_free_pairs_per_s": 10.0,
        "uncontended_p50_over_1_rtt_ratio": 9.0,  # bench.py's own value wins, moved up
    }
    out = derive(reported)
    assert out["uncontended_p50_over_1_rtt_ratio"] == 9.0
    assert out["uncontended_p50_over_2_rtt_ratio"] == pytest.approx(1.0)
    assert list(out)[2:5] == [
        "uncontended_max_ms",
        "uncontended_p50_over_2_rtt_ratio",
        "uncontended_p50_over_1_rtt_ratio",
    ]


def test_rows_give_medians_ratio_and_every_run() -> None:
    base = [{"a_ms": 2.0, "old_ms": 1.0}, {"a_ms": 4.0, "old_ms": 3.0}, {"a_ms": 3.0}]
    head = [{"a_ms": 1.0, "new_per_s": 5.0}, {"a_ms": 2.0}]
    table = {row.name: row for row in rows(base, head)}
    assert list(table) == ["a_ms", "old_ms", "new_per_s"]
    a = table["a_ms"]
    assert (a.base, a.head) == ([2.0, 4.0, 3.0], [1.0, 2.0])
    assert (a.base_median, a.head_median, a.ratio) == (3.0, 1.5, 0.5)
    assert table["old_ms"].head_median is None and table["old_ms"].ratio is None
    assert table["new_per_s"].base_median is None and table["new_per_s"].ratio is None
    assert Row("zero_ms", [0.0], [1.0]).ratio is None
    assert a.as_json()["head_over_base"] == 0.5 and a.as_json()["unit"] == "ms"


def test_render_shows_medians_ratio_and_runs() -> None:
    text = render(
        rows([{"uncontended_p50_ms": 2.0}, {"uncontended_p50_ms": 2.2}], [{"other_s": 1.0}]),
        "1b1bfa7 x 2",
        "73df3b4 x 1",
    )
    lines = text.splitlines()
    assert "base = 1b1bfa7 x 2" in lines[0] and "head = 73df3b4 x 1" in lines[0]
    row = next(line for line in lines if line.startswith("uncontended_p50_ms"))
    assert row.split()[:5] == ["uncontended_p50_ms", "2.10", "-", "-", "ms"]
    assert row.endswith("2.00 2.20 | -")
    assert render([]) == "no figures: every run failed"
    ratio = render(rows([{"x_per_s": 1000.0}], [{"x_per_s": 1500.0}]))
    assert " 1.50 " in ratio.splitlines()[-1]


def test_cpu_model_from_proc_cpuinfo() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R)"
    assert cpu_model("processor : 0\n") == "unknown"


def test_packaging_hash_follows_what_pip_reads(tmp_path: Path) -> None:
    (tmp_path / "sdk").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = packaging_hash(tmp_path)
    (tmp_path / "README.md").write_text("not read by pip")
    assert packaging_hash(tmp_path) == first
    (tmp_path / "sdk" / "VERSION").write_text("0.2.0\n")
    assert packaging_hash(tmp_path) != first


def test_uncommitted_counts_edits_and_new_code_not_stray_files() -> None:
    porcelain = " M coordinator/gcl/coordinator/service.py\n?? out.json\n?? bench/new.py\n?? tmp/\n"
    assert uncommitted(porcelain) == [
        " M coordinator/gcl/coordinator/service.py",
        "?? bench/new.py",
        "?? tmp/",
    ]
    assert uncommitted("?? run1.json\n") == []


def test_schedule_alternates_or_swaps_every_other_round() -> None:
    assert schedule(2) == [(1, "base"), (1, "head"), (2, "base"), (2, "head")]
    assert schedule(3, "abba") == [
        (1, "base"),
        (1, "head"),
        (2, "head"),
        (2, "base"),
        (3, "base"),
        (3, "head"),
    ]
