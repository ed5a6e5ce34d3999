"""Who is asking: shown on every lease so an operator can find the process behind it."""

from __future__ import annotations

import functools
import os
import socket

from gcl.protocol import Holder


def worker_id() -> str:
    """This worker's id: `WORKER_ID` from the environment, else the host name."""
    return os.environ.get("WORKER_ID") or socket.gethostname()


def per_worker(resource: str, worker: str | None = None) -> str:
    """The `{resource}:{worker_id}` name of this worker's own share of a resource."""
    return f"{resource}:{worker or worker_id()}"


def holder(label: str = "", worker: str | None = None) -> Holder:
    """This process as a lease holder; cached, since it is stamped on every request."""
    return _holder(label, worker or worker_id(), os.getpid())


@functools.lru_cache(maxsize=256)
def _holder(label: str, worker: str, pid: int) -> Holder:
    return Holder(
        worker_id=worker[:200], host=socket.gethostname()[:255], pid=pid, label=label[:200]
    )


def holder_label(label: str | None, prefect_holder: object = None) -> str | None:
    """The lease's label, with a Prefect `holder` (e.g. `task_run:<uuid>`) folded into it.

    Prefect's `ConcurrencyLeaseHolder` has `type` and `id`; a mapping with those keys or a plain
    string is taken too, so code written for Prefect shows who holds the slots in `gcl inspect`.
    """
    if prefect_holder is None:
        return label
    if isinstance(prefect_holder, str):
        text = prefect_holder
    else:
        get = prefect_holder.get if isinstance(prefect_holder, dict) else None
        kind = get("type") if get else getattr(prefect_holder, "type", None)
        ident = get("id") if get else getattr(prefect_holder, "id", None)
        text = f"{kind}:{ident}" if kind is not None or ident is not None else str(prefect_holder)
    return f"{label} {text}" if label else text
