"""What the worker SDK costs in CPU: client CPU time per uncontended block, nothing else.

    .venv/bin/python bench/sdk_cpu.py [--blocks 3000] [--warmup 300] [--rounds 3] [--clients 1,8]
    .venv/bin/python bench/sdk_cpu.py --profile 30    # also a cProfile of one client's blocks

Starts its own nats-server and coordinator (separate processes, see `bench.harness`) and runs
`async with client.concurrency(name): pass` in this process, which holds nothing but the
clients (and their renewer thread). The figure is this process's CPU time (user + system, all
threads, `time.process_time`) over the measured blocks, divided by the blocks: wall time on a
shared machine says little, CPU time says what the SDK burns. With several clients they run
concurrently on one event loop, as the throughput bench's load processes do.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.harness import Cluster  # noqa: E402
from gcl.sdk import client as client_module  # noqa: E402
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402
from gcl.sdk.client import AsyncClient  # noqa: E402
from gcl.sdk.renewer import close_all  # noqa: E402

NAME = "bench.cpu"


async def _blocks(client: AsyncClient, count: int) -> None:
    for _ in range(count):
        async with client.concurrency(NAME):
            pass


async def measure(cluster: Cluster, clients: int, blocks: int, warmup: int) -> float:
    """Client CPU µs per block: `blocks` in all, shared by `clients` running concurrently."""
    each = max(1, blocks // clients)
    opened = [AsyncClient(cluster.settings(), label=f"cpu-{i}") for i in range(clients)]
    try:
        for client in opened:
            await client.__aenter__()
        await asyncio.gather(*(_blocks(c, max(1, warmup // clients)) for c in opened))
        for client in opened:
            await client.flush_releases()
        started = time.process_time()
        await asyncio.gather(*(_blocks(c, each) for c in opened))
        for client in opened:
            await client.flush_releases()  # the releases' confirmations are part of a block
        used = time.process_time() - started
    finally:
        for client in opened:
            await client.aclose()
    return used / (each * clients) * 1e6


async def profile(cluster: Cluster, blocks: int, top: int) -> None:
    """cProfile one client's blocks (after a warm-up); prints the `top` costliest by tottime."""
    async with AsyncClient(cluster.settings(), label="cpu-profile") as client:
        await _blocks(client, 300)
        await client.flush_releases()
        profiler = cProfile.Profile(time.thread_time)  # CPU, not wall: this thread
        profiler.enable()
        await _blocks(client, blocks)
        await client.flush_releases()
        profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


async def main(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.clients.split(",")]
    cluster = Cluster("sqlite", synchronous="NORMAL")
    try:
        cluster.start_nats()
        cluster.launch()
        async with AsyncAdminClient(cluster.settings()) as admin:
            await cluster.wait_ready(admin)
            await admin.create_limit(NAME, 1_000_000)
        print(f"sdk: {client_module.__file__}")
        if args.profile:
            await profile(cluster, args.blocks, args.profile)
            return
        results: dict[int, list[float]] = {n: [] for n in counts}
        for index in range(args.rounds):
            for n in counts:
                per_block = await measure(cluster, n, args.blocks, args.warmup)
                results[n].append(per_block)
                print(f"round {index + 1}, {n} client(s): {per_block:.1f} µs CPU per block")
        for n in counts:
            median = statistics.median(results[n])
            print(f"median over {args.rounds} rounds, {n} client(s): {median:.1f} µs CPU/block")
    finally:
        close_all()
        cluster.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000, help="measured blocks per run")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--profile", type=int, default=0, help="cProfile instead; rows to show")
    asyncio.run(main(parser.parse_args()))
