"""What security costs: uncontended acquire+release with NATS roles on vs off, in one run.

    .venv/bin/python bench/security_cost.py [--rounds 4] [--pairs 2000]

Each round starts a fresh NATS and coordinator twice, without and with gcl's roles (users,
least-privilege permissions, per-user inboxes; leases always carry their secret since protocol
v2), and measures one client's enter+exit of `concurrency()` with an empty body. Rounds
alternate the order so drift on a noisy machine hits both alike. Prints medians of the rounds'
p50 and p99 and their ratio (on / off).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.harness import Cluster  # noqa: E402
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402
from gcl.sdk.client import AsyncClient  # noqa: E402


async def one(auth: bool, pairs: int) -> tuple[float, float]:
    """p50 and p99 in ms of `pairs` uncontended blocks against a fresh cluster."""
    cluster = Cluster("sqlite", auth=auth)
    try:
        cluster.start_nats()
        cluster.launch()
        async with AsyncAdminClient(cluster.settings()) as admin:
            await cluster.wait_ready(admin)
            await admin.create_limit("bench.solo", 1_000_000)
        samples: list[float] = []
        async with AsyncClient(cluster.settings()) as client:
            for _ in range(200):
                async with client.concurrency("bench.solo"):
                    pass
            for _ in range(pairs):
                started = time.perf_counter_ns()
                async with client.concurrency("bench.solo"):
                    pass
                samples.append((time.perf_counter_ns() - started) / 1e6)
        samples.sort()
        return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    finally:
        cluster.close()


async def main(rounds: int, pairs: int) -> None:
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for auth in order:
            p50, p99 = await one(auth, pairs)
            results[auth].append((p50, p99))
            mode = "on " if auth else "off"
            print(f"round {index + 1} auth {mode}: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    off50 = statistics.median(r[0] for r in results[False])
    on50 = statistics.median(r[0] for r in results[True])
    off99 = statistics.median(r[1] for r in results[False])
    on99 = statistics.median(r[1] for r in results[True])
    print(f"\nmedian of {rounds} rounds, {pairs} pairs each")
    print(f"  p50: off {off50:.3f} ms, on {on50:.3f} ms, on/off {on50 / off50:.3f}")
    print(f"  p99: off {off99:.3f} ms, on {on99:.3f} ms, on/off {on99 / off99:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.pairs))
