"""gcl's worker SDK: take leases on named global limits.

    from gcl.asyncio import concurrency     # async with concurrency("gpu:gpu-1"): ...
    from gcl.sync import concurrency        # with concurrency("db"): ...

The names below are the public surface; everything else is internal.
"""

from gcl.protocol import Event, LeaseInfo, LimitDetail, LimitInfo, WaiterInfo
from gcl.sdk.admin import AdminClient, AsyncAdminClient
from gcl.sdk.client import AsyncClient, Client
from gcl.sdk.events import EventFilter, events, iter_events
from gcl.sdk.exceptions import (
    AcquireTimeout,
    CoordinatorUnavailable,
    Forbidden,
    GCLError,
    InvalidRequest,
    LeaseLost,
    LeaseNotFound,
    LimitExists,
    LimitNotFound,
    OverCapacity,
    PermissionDenied,
    RequestError,
)
from gcl.sdk.identity import per_worker, worker_id
from gcl.sdk.leases import Lease
from gcl.sdk.settings import ClientSettings, NatsSettings
from gcl.sdk.waiting import Waiting

__all__ = [
    "AcquireTimeout",
    "AdminClient",
    "AsyncAdminClient",
    "AsyncClient",
    "Client",
    "ClientSettings",
    "CoordinatorUnavailable",
    "Event",
    "EventFilter",
    "Forbidden",
    "GCLError",
    "InvalidRequest",
    "Lease",
    "LeaseInfo",
    "LeaseLost",
    "LeaseNotFound",
    "LimitDetail",
    "LimitExists",
    "LimitInfo",
    "LimitNotFound",
    "NatsSettings",
    "OverCapacity",
    "PermissionDenied",
    "RequestError",
    "WaiterInfo",
    "Waiting",
    "events",
    "iter_events",
    "per_worker",
    "worker_id",
]
