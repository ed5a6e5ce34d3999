"""gcl's worker SDK: take leases on named global limits.

    from sdk.asyncio import concurrency     # async with concurrency("gpu:gpu-1"): ...
    from sdk.sync import concurrency        # with concurrency("db"): ...

The names below are the public surface; everything else is internal.
"""

from sdk.admin import AdminClient, AsyncAdminClient
from sdk.client import AsyncClient, Client
from sdk.events import EventFilter, events, iter_events
from sdk.exceptions import (
    AcquireTimeout,
    CoordinatorUnavailable,
    GCLError,
    InvalidRequest,
    LeaseLost,
    LeaseNotFound,
    LimitExists,
    LimitNotFound,
    RequestError,
)
from sdk.identity import per_worker, worker_id
from sdk.leases import Lease
from sdk.protocol import Event, LeaseInfo, LimitDetail, LimitInfo, WaiterInfo
from sdk.settings import ClientSettings, NatsSettings

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
    "RequestError",
    "WaiterInfo",
    "events",
    "iter_events",
    "per_worker",
    "worker_id",
]
