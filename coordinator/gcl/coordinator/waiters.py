"""Waiters and the per-limit FIFO queues they stand in.

One waiter stands in the queue of every limit it names. Queues are ordered by arrival, and
arrival order is global, so the oldest waiter is at the head of every queue it stands in:
two callers naming the same limits in different orders can never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """All queues; a dict per limit keeps arrival order with O(1) removal."""

    def __init__(self) -> None:
        self.by_request: dict[str, Waiter] = {}
        self._queues: dict[str, dict[str, Waiter]] = {}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.by_request

    def __len__(self) -> int:
        return len(self.by_request)

    def get(self, request_id: str) -> Waiter | None:
        return self.by_request.get(request_id)

    def add(self, waiter: Waiter) -> None:
        self.by_request[waiter.request_id] = waiter
        for name in waiter.names:
            self._queues.setdefault(name, {})[waiter.request_id] = waiter

    def remove(self, waiter: Waiter) -> None:
        self.by_request.pop(waiter.request_id, None)
        for name in waiter.names:
            self.drop_from(name, waiter)

    def drop_from(self, name: str, waiter: Waiter) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            queue.pop(waiter.request_id, None)
            if not queue:
                del self._queues[name]

    def head(self, name: str) -> Waiter | None:
        queue = self._queues.get(name)
        return next(iter(queue.values())) if queue else None

    def queue(self, name: str) -> list[Waiter]:
        return list(self._queues.get(name, {}).values())

    def depth(self, name: str) -> int:
        return len(self._queues.get(name, ()))

    def position(self, name: str, request_id: str) -> int:
        for index, key in enumerate(self._queues.get(name, {})):
            if key == request_id:
                return index
        return -1
