"""Module-level sync API: a drop-in for `prefect.concurrency.sync`.

    from gcl.sync import concurrency, rate_limit

    with concurrency("db", occupy=1):
        run_query()

The positional parameters are Prefect's, in Prefect's order; gcl's own options are keyword-only.
One client per process, configured from GCL_* environment variables; safe across fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from gcl.sdk.client import Client, Names
from gcl.sdk.identity import holder_label
from gcl.sdk.leases import Lease
from gcl.sdk.waiting import OnWait

__all__ = ["close", "concurrency", "get_client", "rate_limit"]

_client: Client | None = None
_lock = threading.Lock()


def get_client() -> Client:
    """The process's shared sync client."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client


@contextlib.contextmanager
def concurrency(
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
    on_wait: OnWait | None = None,
) -> Iterator[Lease]:
    """Hold `occupy` slots on every limit in `names` (atomically) for the block.

    The parameters mean what they mean in `gcl.asyncio.concurrency` (and in Prefect);
    `on_wait` is called from the client's own thread.
    """
    del max_retries
    ttl = lease_ttl if lease_ttl is not None else lease_duration
    with get_client().concurrency(
        names,
        occupy,
        timeout_seconds,
        strict=strict,
        lease_ttl=ttl,
        label=holder_label(label, holder),
        on_wait=on_wait,
    ) as lease:
        yield lease


def rate_limit(
    names: Names,
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    label: str | None = None,
    on_wait: OnWait | None = None,
) -> None:
    """Wait for room under the limits' decay rate, then take `occupy` slots that drain away."""
    get_client().rate_limit(
        names, occupy, timeout_seconds, strict=strict, label=label, on_wait=on_wait
    )


def close() -> None:
    """Close the shared client (it is re-created on next use)."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _forget_after_fork() -> None:
    global _client, _lock
    _client = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
