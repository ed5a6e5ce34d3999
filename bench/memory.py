"""Coordinator memory: idle, and with many limits and leases (10,000 / 100,000 ≤ 300 MB).

First the idle figure: a real `python -m gcl.cli serve` on SQLite next to its own nats-server,
read from /proc once it is ready and has settled (VmRSS, and RssAnon: its own heap, without
the shared libraries' pages). Then the state machine and store are driven the way the
coordinator holds them: validated wire requests in, leases committed to a SQLite file; then a
fresh process restores them all, as a restarted coordinator does. Prints each process's peak
resident memory.

    .venv/bin/python bench/memory.py [--limits 10000] [--leases 100000] [--idle-only]
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.stats import verdict  # noqa: E402
from gcl.coordinator.clock import SystemClock  # noqa: E402
from gcl.coordinator.engine import Engine  # noqa: E402
from gcl.coordinator.store import Store  # noqa: E402
from gcl.protocol import AcquireRequest, Holder, LimitCreate  # noqa: E402

TARGET_MB = 300
READY_LINE = b"coordinator ready"
READY_TIMEOUT = 30.0
SETTLE_SECONDS = 2.0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and VmHWM of a live process, in MB (Linux /proc)."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            figures[key] = int(value.split()[0]) / 1024
    return figures


def idle_rss(settle: float = SETTLE_SECONDS) -> dict[str, float]:
    """An idle coordinator's memory: `gcl serve` on an empty SQLite file, its own nats-server.

    Waits (bounded) for "coordinator ready" in its log, lets it settle, reads /proc; the
    coordinator and nats-server are stopped whatever happens.
    """
    # Here, not at the top: the harness's imports would count in this process's peak RSS,
    # which is the live figure below.
    from bench.harness import BenchError, Cluster

    cluster = Cluster("sqlite")
    try:
        cluster.start_nats()
        cluster.launch()
        deadline = time.monotonic() + READY_TIMEOUT
        while READY_LINE not in cluster.log_path.read_bytes():
            if cluster.process is not None and cluster.process.poll() is not None:
                raise BenchError(f"coordinator exited: {cluster.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"coordinator not ready in {READY_TIMEOUT}s: {cluster.log_tail()}")
            time.sleep(0.05)
        time.sleep(settle)
        memory = process_memory_mb(cluster.pid)
    finally:
        cluster.close()
    return {
        "coordinator_idle_rss_mb": memory["VmRSS"],
        "coordinator_idle_rss_anon_mb": memory["RssAnon"],
        "coordinator_idle_rss_file_mb": memory["RssFile"],
    }


def report_idle() -> dict[str, float]:
    figures = idle_rss()
    rss = figures["coordinator_idle_rss_mb"]
    print(
        f"idle: `gcl serve` on SQLite, ready + {SETTLE_SECONDS:.0f}s: {rss:.1f} MB RSS "
        f"({figures['coordinator_idle_rss_anon_mb']:.1f} MB anonymous, "
        f"{figures['coordinator_idle_rss_file_mb']:.1f} MB file-backed) "
        f"{verdict('coordinator_idle_rss_mb', rss)}",
        flush=True,
    )
    return figures


def fill(engine: Engine, store: Store, limits: int, leases: int) -> None:
    for i in range(limits):
        engine.create_limit(LimitCreate(name=f"limit-{i}", limit=leases))
    store.apply(engine.take_changes())
    for j in range(leases):
        holder = Holder(worker_id=f"worker-{j % 200}", host="host-a", pid=1000 + j % 200)
        raw = AcquireRequest(
            secret="test-secret-0123456789",
            request_id=f"req-{j}",
            names=[f"limit-{j % limits}"],
            holder=holder,
        ).model_dump_json()
        engine.acquire(AcquireRequest.model_validate_json(raw))
        if j % 1000 == 999:
            store.apply(engine.take_changes())
    store.apply(engine.take_changes())


def restore(url: str) -> None:
    """The restarted coordinator's view: a fresh process that loads everything."""
    started = time.perf_counter()
    store = Store(url)
    limits, leases = store.open()
    engine = Engine(SystemClock())
    engine.restore(limits, leases)
    gc.collect()
    verdict = "OK" if rss_mb() <= TARGET_MB else "MISS"
    print(
        f"restart: {len(engine.limits):,} limits, {len(engine.leases):,} leases restored in "
        f"{time.perf_counter() - started:.1f}s: {rss_mb():.0f} MB peak RSS "
        f"(target ≤ {TARGET_MB} MB) {verdict}"
    )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", type=int, default=10_000)
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--idle-only", action="store_true", help="Only the idle coordinator.")
    parser.add_argument("--restore", metavar="DB_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restore:
        restore(args.restore)
        return
    report_idle()
    if args.idle_only:
        return
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='gcl-mem-')) / 'gcl.db'}"
    store = Store(url)
    store.open()
    engine = Engine(SystemClock())
    started = time.perf_counter()
    fill(engine, store, args.limits, args.leases)
    gc.collect()
    verdict = "OK" if rss_mb() <= TARGET_MB else "MISS"
    print(
        f"live: {args.limits:,} limits, {len(engine.leases):,} leases granted in "
        f"{time.perf_counter() - started:.1f}s: {rss_mb():.0f} MB peak RSS "
        f"(target ≤ {TARGET_MB} MB) {verdict}"
    )
    store.close()
    subprocess.run([sys.executable, __file__, "--restore", url], check=True, timeout=600)


if __name__ == "__main__":
    main()
