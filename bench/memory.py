"""Coordinator memory with many limits and leases (TARGETS.md: 10,000 / 100,000 ≤ 300 MB).

Drives the real state machine and store the way the coordinator holds them: validated wire
requests in, leases committed to a SQLite file; then a fresh process restores them all, as a
restarted coordinator does. Prints each process's peak resident memory.

    .venv/bin/python bench/memory.py [--limits 10000] [--leases 100000]
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

from gcl.coordinator.clock import SystemClock
from gcl.coordinator.engine import Engine
from gcl.coordinator.store import Store
from gcl.protocol import AcquireRequest, Holder, LimitCreate

TARGET_MB = 300


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    parser.add_argument("--restore", metavar="DB_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restore:
        restore(args.restore)
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
