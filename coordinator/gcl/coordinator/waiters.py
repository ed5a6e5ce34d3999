"""Waiters and the per-limit FIFO queues they stand in.

One waiter stands in the queue of every limit it names. Queues are ordered by arrival, and
arrival order is global, so the oldest waiter is at the head of every queue it stands in:
two callers naming the same limits in different orders can never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcl.coordinator.ranked import Ranked
from gcl.protocol import AcquireRequest, WaiterInfo


@dataclass(slots=True)
class Waiter:
    request: AcquireRequest
    names: list[str]
    missing: list[str]
    queued_at: float
    deadline: float
    notify: str | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def info(self, now: float, position: int) -> WaiterInfo:
        return WaiterInfo(
            request_id=self.request_id,
            names=list(self.names),
            occupy=self.request.occupy,
            mode=self.request.mode,
            holder=self.request.holder,
            waited_seconds=round(max(0.0, now - self.queued_at), 6),
            position=position,
        )


class WaitQueues:
    """All queues: one `Ranked` per limit, so adding, removing anywhere, the head and a
    waiter's position cost O(log depth), never a walk down the queue."""

    def __init__(self) -> None:
        self.by_request: dict[str, Waiter] = {}
        self._queues: dict[str, Ranked[Waiter]] = {}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.by_request

    def __len__(self) -> int:
        return len(self.by_request)

    def get(self, request_id: str) -> Waiter | None:
        return self.by_request.get(request_id)

    def add(self, waiter: Waiter) -> None:
        self.by_request[waiter.request_id] = waiter
        for name in waiter.names:
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = Ranked(_request_id)
            queue.add(waiter)

    def remove(self, waiter: Waiter) -> None:
        self.by_request.pop(waiter.request_id, None)
        for name in waiter.names:
            self.drop_from(name, waiter)

    def drop_from(self, name: str, waiter: Waiter) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            queue.pop(waiter.request_id)
            if not queue:
                del self._queues[name]

    def head(self, name: str) -> Waiter | None:
        queue = self._queues.get(name)
        return queue.first() if queue else None

    def queue(self, name: str) -> list[Waiter]:
        """The whole queue in order: O(depth), for rare steps (an update, a delete)."""
        queue = self._queues.get(name)
        return list(queue.values()) if queue else []

    def depth(self, name: str) -> int:
        queue = self._queues.get(name)
        return len(queue) if queue else 0

    def position(self, name: str, request_id: str) -> int:
        """0-based place in the queue of `name`, or -1 if the request does not stand in it."""
        queue = self._queues.get(name)
        return queue.rank(request_id) if queue else -1

    def page(self, name: str, after: int | None, count: int) -> list[tuple[int, int, Waiter]]:
        """Up to `count` (cursor key, position, waiter) that stand behind cursor key `after`."""
        queue = self._queues.get(name)
        if not queue:
            return []
        found = queue.after(after, count)
        if not found:
            return []
        first = queue.rank_of_key(found[0][0])
        return [(key, first + i, waiter) for i, (key, waiter) in enumerate(found)]


def _request_id(waiter: Waiter) -> str:
    return waiter.request_id
