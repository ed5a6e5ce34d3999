"""Module-level sync API, shaped like `prefect.concurrency.sync`.

    from sdk.sync import concurrency, rate_limit

    with concurrency("db", occupy=1):
        run_query()

One client per process, configured from GCL_* environment variables; safe across fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from sdk.client import Client, Names
from sdk.leases import Lease

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
    strict: bool = False,
    lease_ttl: float | None = None,
    label: str | None = None,
    *,
    lease_duration: float | None = None,
    max_retries: int | None = None,
) -> Iterator[Lease]:
    """Hold `occupy` slots on every limit in `names` (atomically) for the block.

    `lease_duration` (= `lease_ttl`) and `max_retries` (nothing to bound: waiters are pushed
    their grant) are Prefect's names, accepted so moving code over is an import change.
    """
    del max_retries
    ttl = lease_ttl if lease_ttl is not None else lease_duration
    with get_client().concurrency(names, occupy, timeout_seconds, strict, ttl, label) as lease:
        yield lease


def rate_limit(
    names: Names, occupy: int = 1, timeout_seconds: float | None = None, strict: bool = False
) -> None:
    """Wait for room under the limits' decay rate, then take `occupy` slots that drain away."""
    get_client().rate_limit(names, occupy, timeout_seconds, strict)


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
