"""Module-level async API, shaped like `prefect.concurrency.asyncio`.

    from sdk.asyncio import concurrency, rate_limit

    async with concurrency("gpu:gpu-1", occupy=1):
        await run_model()

One client (one NATS connection) per event loop, configured from GCL_* environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator

from sdk.client import AsyncClient, Names
from sdk.leases import Lease

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def get_client() -> AsyncClient:
    """The shared client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = AsyncClient()
    return client


@contextlib.asynccontextmanager
async def concurrency(
    names: Names,
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    lease_ttl: float | None = None,
    label: str | None = None,
    cancel_on_lost: bool = False,
    *,
    lease_duration: float | None = None,
    max_retries: int | None = None,
) -> AsyncIterator[Lease]:
    """Hold `occupy` slots on every limit in `names` (atomically) for the block.

    `lease_duration` and `max_retries` are Prefect's names, accepted so moving code over is an
    import change: `lease_duration` is `lease_ttl`; `max_retries` has nothing to bound here
    (waiters are pushed their grant, they do not retry), so only `timeout_seconds` limits a wait.
    """
    del max_retries
    client = get_client()
    ttl = lease_ttl if lease_ttl is not None else lease_duration
    async with client.concurrency(
        names, occupy, timeout_seconds, strict, ttl, label, cancel_on_lost
    ) as lease:
        yield lease


async def rate_limit(
    names: Names, occupy: int = 1, timeout_seconds: float | None = None, strict: bool = False
) -> None:
    """Wait for room under the limits' decay rate, then take `occupy` slots that drain away."""
    await get_client().rate_limit(names, occupy, timeout_seconds, strict)


os.register_at_fork(after_in_child=_clients.clear)
