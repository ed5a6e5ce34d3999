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
) -> AsyncIterator[Lease]:
    """Hold `occupy` slots on every limit in `names` (atomically) for the block."""
    client = get_client()
    async with client.concurrency(
        names, occupy, timeout_seconds, strict, lease_ttl, label, cancel_on_lost
    ) as lease:
        yield lease


async def rate_limit(
    names: Names, occupy: int = 1, timeout_seconds: float | None = None, strict: bool = False
) -> None:
    """Wait for room under the limits' decay rate, then take `occupy` slots that drain away."""
    await get_client().rate_limit(names, occupy, timeout_seconds, strict)


os.register_at_fork(after_in_child=_clients.clear)
