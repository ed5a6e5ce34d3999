"""Fixed, believable data: a GPU fleet, an API quota, a database pool. For the README
screenshot and snapshot tests, so both show the dashboard as an operator would see it.
"""

from __future__ import annotations

from gcl.protocol import Event, Holder, LeaseInfo, LimitDetail, LimitInfo, WaiterInfo
from gcl.tui.model import Board
from tests.support.fixed_source import FixedSource

NOW = 1_700_000_000.0


def info(name: str, limit: int, held: float, waiters: int = 0, **extra: object) -> LimitInfo:
    fields: dict[str, object] = {
        "name": name,
        "limit": limit,
        "active": True,
        "slot_decay_per_second": 0.0,
        "occupied": held,
        "held": int(held),
        "leases": int(held),
        "waiters": waiters,
        "denied": 0,
        "avg_occupancy_seconds": 0.0,
        "fencing_token": 0,
        "created_at": NOW - 86_400,
        "updated_at": NOW - 3_600,
    }
    fields.update(extra)
    return LimitInfo.model_validate(fields)


def holder(worker: int, label: str = "") -> Holder:
    return Holder(
        worker_id=f"worker-{worker}", host=f"node-{worker % 3 + 1}", pid=4100 + worker, label=label
    )


def lease(n: int, name: str, age: float, token: int, occupy: int = 1) -> LeaseInfo:
    return LeaseInfo(
        lease_id=f"lease-{n:04d}",
        request_id=f"req-{n:04d}",
        names=[name],
        occupy=occupy,
        mode="concurrency",
        ttl=30.0,
        holder=holder(n, "train.py" if n % 2 else "embed"),
        granted_at=NOW - age,
        expires_in=30.0 - (age % 30),
        fencing_tokens={name: token},
    )


def waiter(n: int, name: str, position: int, waited: float) -> WaiterInfo:
    return WaiterInfo(
        request_id=f"req-{n:04d}",
        names=[name],
        occupy=1,
        mode="concurrency",
        holder=holder(n, "train.py"),
        waited_seconds=waited,
        position=position,
    )


def details() -> list[LimitDetail]:
    gpu1 = info(
        "gpu:gpu-1", 2, 2, waiters=3, denied=4, avg_occupancy_seconds=184.0, fencing_token=118
    )
    return [
        LimitDetail(
            limit=gpu1,
            holders=[lease(7, "gpu:gpu-1", 412.0, 117), lease(12, "gpu:gpu-1", 95.5, 118)],
            waiters=[
                waiter(21, "gpu:gpu-1", 1, 61.0),
                waiter(22, "gpu:gpu-1", 2, 33.0),
                waiter(25, "gpu:gpu-1", 3, 4.2),
            ],
        ),
        _plain(info("gpu:gpu-2", 2, 1, avg_occupancy_seconds=151.0, fencing_token=96)),
        _plain(info("gpu:{worker_id}", 1, 0, is_template=True)),
        _plain(
            info(
                "openai-api",
                50,
                37.5,
                slot_decay_per_second=2.0,
                denied=12,
                avg_occupancy_seconds=0.8,
                fencing_token=40211,
            )
        ),
        _plain(info("db.primary", 20, 6, avg_occupancy_seconds=0.04, fencing_token=88123)),
        _plain(info("s3-uploads", 8, 0, active=False, fencing_token=310)),
    ]


def _plain(limit: LimitInfo) -> LimitDetail:
    return LimitDetail(limit=limit, holders=[], waiters=[])


def events() -> list[Event]:
    """Oldest first, as they would arrive."""
    gpu = "gpu:gpu-1"
    return [
        Event(
            kind="coordinator.started",
            at=NOW - 600,
            reason="coordinator demo started: 6 limits, 14 leases restored",
        ),
        Event(kind="limit.updated", at=NOW - 420, names=["openai-api"]),
        Event(
            kind="lease.granted",
            at=NOW - 412,
            names=[gpu],
            lease_id="lease-0007",
            holder=holder(7, "train.py"),
            occupy=1,
        ),
        Event(
            kind="lease.expired",
            at=NOW - 130,
            names=["gpu:gpu-2"],
            lease_id="lease-0009",
            holder=holder(9),
            occupy=1,
            reason="no renewal for 30s",
        ),
        Event(
            kind="lease.granted",
            at=NOW - 95,
            names=[gpu],
            lease_id="lease-0012",
            holder=holder(12, "embed"),
            occupy=1,
        ),
        Event(
            kind="waiter.queued",
            at=NOW - 61,
            names=[gpu],
            request_id="req-0021",
            holder=holder(21, "train.py"),
            occupy=1,
        ),
        Event(
            kind="waiter.queued",
            at=NOW - 33,
            names=[gpu],
            request_id="req-0022",
            holder=holder(22, "train.py"),
            occupy=1,
        ),
        Event(
            kind="lease.released",
            at=NOW - 12,
            names=["db.primary"],
            lease_id="lease-0031",
            holder=holder(31),
            occupy=1,
        ),
        Event(
            kind="waiter.queued",
            at=NOW - 4,
            names=[gpu],
            request_id="req-0025",
            holder=holder(25, "train.py"),
            occupy=1,
        ),
    ]


def source() -> FixedSource:
    return FixedSource(
        details(), events(), now=NOW, coordinator_id="3f9c2a71d0be", label="demo data"
    )


def board() -> Board:
    """A board with three minutes of occupancy history already recorded."""
    seeded = Board()
    shapes = {
        "gpu:gpu-1": [min(1.0, 0.2 + i / 40) for i in range(90)],
        "gpu:gpu-2": [0.5 + 0.5 * ((i // 12) % 2) for i in range(90)],
        "gpu:{worker_id}": [0.0] * 90,
        "openai-api": [0.3 + 0.6 * abs((i % 30) - 15) / 15 for i in range(90)],
        "db.primary": [0.1 + 0.25 * ((i * 7) % 5) / 4 for i in range(90)],
        "s3-uploads": [0.0] * 90,
    }
    for name, values in shapes.items():
        seeded.seed_history(name, values)
    return seeded
