"""Why a request still waits: its place in each queue and who holds those limits now.

`wait.inspect` lets a waiting worker (not only an operator) see what blocks it, so it can log
"3rd in line on gpu:gpu-1, held by gpu-2@node-7 for 4m05s" instead of waiting in silence.
It reads the engine and changes nothing. Only the requester may ask (it shows its secret), and
it sees holders as people do (worker, host, pid, label, held for), never lease ids or tokens.
"""

from __future__ import annotations

import heapq

from gcl.coordinator.engine import Engine, _check_secret, _not_yours
from gcl.coordinator.waiters import Waiter
from gcl.protocol import MAX_HOLDINGS_SHOWN, Holding, Standing, WaitDetail


def wait_detail(engine: Engine, request_id: str, secret: str) -> WaitDetail:
    """Where `request_id` stands: `queued` with its standings, `granted`, or `unknown`."""
    waiter = engine.queues.get(request_id)
    if waiter is not None:
        _check_secret(waiter.request.secret, secret, request_id)
        now = engine.clock.now()
        return WaitDetail(
            status="queued",
            request_id=request_id,
            occupy=waiter.request.occupy,
            waited_seconds=round(max(0.0, now - waiter.queued_at), 6),
            standings=[_standing(engine, waiter, name, now) for name in waiter.names],
        )
    lease_id = engine.lease_by_request.get(request_id)
    if lease_id is not None:
        if not engine.leases[lease_id].owned_by(secret):
            raise _not_yours(f"request {request_id}")
        return WaitDetail(status="granted", request_id=request_id)
    return WaitDetail(status="unknown", request_id=request_id)


def _standing(engine: Engine, waiter: Waiter, name: str, now: float) -> Standing:
    limit = engine.limits[name]
    wall = engine.clock.wall()
    leases = (engine.leases[i] for i in limit.lease_ids)
    longest = heapq.nsmallest(MAX_HOLDINGS_SHOWN, leases, key=lambda lease: lease.granted_at)
    return Standing(
        name=name,
        position=engine.queues.position(name, waiter.request_id),
        waiters=engine.queues.depth(name),
        limit=limit.limit,
        occupied=round(limit.occupied(now), 6),
        active=limit.active,
        avg_hold_seconds=round(limit.typical_hold(), 6),
        leases=len(limit.lease_ids),
        holders=[
            Holding(
                holder=lease.holder,
                occupy=lease.occupy,
                held_seconds=round(max(0.0, wall - lease.granted_at), 3),
                long_lived=lease.long_lived,
            )
            for lease in longest
        ],
    )
