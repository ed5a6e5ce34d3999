"""Module-level async API: a drop-in for `prefect.concurrency.asyncio`.

    from gcl.asyncio import concurrency, rate_limit

    async with concurrency("gpu:gpu-1", occupy=1):
        await run_model()

The positional parameters are Prefect's, in Prefect's order; gcl's own options are keyword-only.
One client (one NATS connection) per event loop, configured from GCL_* environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator

from gcl.sdk.client import AsyncClient, Names
from gcl.sdk.identity import holder_label
from gcl.sdk.leases import Lease
from gcl.sdk.waiting import OnWait

__all__ = ["concurrency", "get_client", "rate_limit"]

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
    max_retries: int | None = None,
    lease_duration: float | None = None,
    strict: bool = False,
    holder: object = None,
    *,
    lease_ttl: float | None = None,
    label: str | None = None,
    cancel_on_lost: bool = False,
    on_wait: OnWait | None = None,
) -> AsyncIterator[Lease]:
    """Hold `occupy` slots on every limit in `names` (atomically) for the block.

    Prefect's parameters: `timeout_seconds` (None waits for ever, 0 tries once, else
    `AcquireTimeout`, a `TimeoutError`); `max_retries` is accepted and has nothing to bound
    (waiters are pushed their grant, they do not retry); `lease_duration` is the lease's TTL
    (renewed in the background); `strict` raises `LimitNotFound` for a missing limit;
    `holder` (Prefect's `ConcurrencyLeaseHolder`, a `{"type", "id"}` mapping or a string) is
    shown on the lease. Empty `names` holds nothing. gcl's own: `lease_ttl` (same as
    `lease_duration`), `label` (shown on the lease), `cancel_on_lost` (cancel the block at once
    if the lease is lost), `on_wait` (called with a `gcl.sdk.waiting.Waiting` while it waits:
    its place in line, who holds the slots, an estimate).
    """
    del max_retries
    ttl = lease_ttl if lease_ttl is not None else lease_duration
    async with get_client().concurrency(
        names,
        occupy,
        timeout_seconds,
        strict=strict,
        lease_ttl=ttl,
        label=holder_label(label, holder),
        cancel_on_lost=cancel_on_lost,
        on_wait=on_wait,
    ) as lease:
        yield lease


async def rate_limit(
    names: Names,
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    label: str | None = None,
    on_wait: OnWait | None = None,
) -> None:
    """Wait for room under the limits' decay rate, then take `occupy` slots that drain away.

    Prefect's signature; empty `names` returns at once."""
    await get_client().rate_limit(
        names, occupy, timeout_seconds, strict=strict, label=label, on_wait=on_wait
    )


os.register_at_fork(after_in_child=_clients.clear)
