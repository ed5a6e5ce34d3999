"""Per-operation cost of a wait queue by its depth: the pure engine on a fake clock, no network.

For each depth, one limit of 1 slot is held and `depth` waiters queue on it; then, keeping the
depth constant, each sample times one of each:

- enqueue:  an acquire that joins the back of the queue;
- grant:    the holder releases, so the head is admitted (release + admission in one step);
- withdraw: a waiter in the middle of the queue gives up;
- position: the middle waiter's place in the queue (what a re-sent acquire reports).

Prints the median microseconds per operation; they should not grow with the depth.

    .venv/bin/python bench/queue_depth.py [--depths 10,1000,10000,40000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gcl.coordinator.engine import Engine
from gcl.protocol import AcquireRequest, Holder, LimitCreate
from tests.support.clock import FakeClock

OPERATIONS = ("enqueue", "grant", "withdraw", "position")
SECRET = "bench-secret-0123456789"


def make_engine(depth: int) -> Engine:
    """An engine whose caps let `depth` waiters queue on one limit."""
    if "bounds" in inspect.signature(Engine).parameters:
        from gcl.coordinator.bounds import Bounds

        room = max(depth * 2, 1_000)  # 40,000 waiters on one limit: past the default cap
        return Engine(FakeClock(), bounds=Bounds(max_waiters_per_limit=room, max_waiters=room))
    return Engine(FakeClock())  # an older engine, for a before/after comparison


class Queue:
    """One full limit with a queue of constant depth, and the ids in it, in order."""

    def __init__(self, depth: int) -> None:
        self.engine = make_engine(depth)
        self.engine.create_limit(LimitCreate(name="q", limit=1))
        self.serial = 0
        self.lease_id = self._lease(self.acquire())
        self.ids = [self.acquire() for _ in range(depth)]  # only appended: cheap to keep
        self.middle = depth // 2
        self.engine.take_changes()

    def request(self) -> AcquireRequest:
        self.serial += 1
        holder = Holder(worker_id=f"worker-{self.serial}", host="bench", pid=self.serial)
        return AcquireRequest(
            secret=SECRET, request_id=f"r{self.serial}", names=["q"], holder=holder
        )

    def acquire(self, request: AcquireRequest | None = None) -> str:
        request = request or self.request()
        self.engine.acquire(request)
        return request.request_id

    def _lease(self, request_id: str) -> str:
        return self.engine.lease_by_request[request_id]

    def sample(self, times: dict[str, list[float]]) -> None:
        """One of each operation; the depth is the same afterwards. Our own bookkeeping is
        O(1) so it neither costs nor evicts the caches before the timed calls."""
        middle = self.ids[self.middle]
        self.middle += 2  # per sample the front moves one id on and two are appended
        times["position"].append(timed(lambda: self.engine.queues.position("q", middle)))
        times["withdraw"].append(timed(lambda: self.engine.withdraw(middle, SECRET, "cancelled")))
        request = self.request()
        times["enqueue"].append(timed(lambda: self.acquire(request)))
        self.ids.append(request.request_id)
        head = self.engine.queues.head("q")
        assert head is not None
        times["grant"].append(timed(lambda: self.engine.release(self.lease_id, SECRET)))
        self.lease_id = self._lease(head.request_id)
        self.ids.append(self.acquire())
        self.engine.take_changes()


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1_000


def measure(depth: int, samples: int) -> dict[str, float]:
    queue = Queue(depth)
    times: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    gc.collect()
    gc.disable()
    try:
        for _ in range(samples):
            queue.sample(times)
    finally:
        gc.enable()
    assert queue.engine.queues.depth("q") == depth, "the queue must keep its depth"
    return {op: statistics.median(values) for op, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="10,1000,10000,40000")
    parser.add_argument("--samples", type=int, default=1_000)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    print(f"median µs per operation ({args.samples} samples per depth, pure engine, fake clock)")
    print(f"| depth | {' | '.join(OPERATIONS)} |")
    print(f"|---:|{'---:|' * len(OPERATIONS)}")
    for depth in depths:
        result = measure(depth, args.samples)
        cells = " | ".join(f"{result[op]:.1f}" for op in OPERATIONS)
        print(f"| {depth:,} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
