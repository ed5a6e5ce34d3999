"""Background lease renewal on a thread of its own, with a NATS connection of its own.

A body that holds the GIL in bursts or blocks the caller's event loop for longer than the TTL
must not lose its lease, so renewal never runs on the caller's loop. One renewer serves every
lease of a process; each lease renews at a third of its TTL and retries transient failures a
few times per period. Only an answer from the coordinator ("that lease is gone") marks a lease
lost: a coordinator that is merely unreachable may come back and restore it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from nats.aio.client import Client as NATS

from sdk.exceptions import CoordinatorUnavailable, LeaseLost, LeaseNotFound
from sdk.leases import Lease
from sdk.loop_thread import LoopThread
from sdk.protocol import LeaseRef, RenewResult
from sdk.settings import NatsSettings
from sdk.transport import Rpc, connect

log = logging.getLogger("gcl.sdk")
RETRIES_PER_PERIOD = 3
OnLost = Callable[[Lease], None]


class Renewer:
    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._thread = LoopThread("gcl-renewer")
        self._rpc: Rpc | None = None
        self._connecting: asyncio.Lock | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def track(self, lease: Lease, on_lost: OnLost | None = None) -> None:
        """Renew `lease` until `untrack`; call `on_lost` (from the renewer thread) if it is lost."""
        if lease.info is None or lease.info.mode != "concurrency":
            return
        self._thread.call_soon(self._start, lease, on_lost)

    def untrack(self, lease: Lease) -> None:
        self._thread.call_soon(self._stop, id(lease))

    def _start(self, lease: Lease, on_lost: OnLost | None) -> None:
        self._tasks[id(lease)] = self._thread.loop.create_task(self._renew_loop(lease, on_lost))

    def _stop(self, key: int) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def _rpc_ready(self) -> Rpc:
        if self._rpc is None:
            self._connecting = self._connecting or asyncio.Lock()
            async with self._connecting:
                if self._rpc is None:
                    nc: NATS = await connect(self.settings, f"gcl-renewer-{os.getpid()}")
                    self._rpc = Rpc(nc, self.settings)
        return self._rpc

    async def _renew_loop(self, lease: Lease, on_lost: OnLost | None) -> None:
        assert lease.info is not None
        period = lease.info.ttl / 3
        try:
            while True:
                await asyncio.sleep(period)
                if not await self._renew_once(lease, period):
                    break
        except (LeaseLost, LeaseNotFound) as exc:
            lease.mark_lost(str(exc))
            log.error(
                "lease %s on %s was lost: %s. The block keeps running but no longer "
                "owns the slots; LeaseLost is raised when it exits",
                lease.lease_id,
                lease.names,
                exc,
            )
            if on_lost is not None:
                on_lost(lease)
        finally:
            self._tasks.pop(id(lease), None)

    async def _renew_once(self, lease: Lease, period: float) -> bool:
        """One renewal with bounded retries; True to keep renewing."""
        assert lease.info is not None
        timeout = max(0.2, min(self.settings.request_timeout, period / RETRIES_PER_PERIOD))
        for attempt in range(RETRIES_PER_PERIOD):
            try:
                rpc = await self._rpc_ready()
                await rpc.call(
                    "renew", LeaseRef(lease_id=lease.info.lease_id), RenewResult, timeout=timeout
                )
                return True
            except CoordinatorUnavailable as exc:
                log.warning(
                    "renewal of lease %s failed (attempt %d/%d): %s",
                    lease.lease_id,
                    attempt + 1,
                    RETRIES_PER_PERIOD,
                    exc,
                )
                await asyncio.sleep(min(0.2 * 2**attempt, period / RETRIES_PER_PERIOD))
        return True

    def close(self) -> None:
        async def shutdown() -> None:
            for task in list(self._tasks.values()):
                task.cancel()
            if self._rpc is not None:
                await self._rpc.nc.close()

        try:
            self._thread.run(shutdown(), timeout=5)
        finally:
            self._thread.stop()


_renewers: dict[tuple[str, str], Renewer] = {}
_renewers_lock = threading.Lock()


def renewer_for(settings: NatsSettings) -> Renewer:
    """The process's renewer for this NATS URL and prefix, started on first use."""
    key = (settings.nats_url, settings.prefix)
    with _renewers_lock:
        renewer = _renewers.get(key)
        if renewer is None:
            renewer = _renewers[key] = Renewer(settings)
        return renewer


def _forget_after_fork() -> None:
    """A forked child inherits no running threads: it must start its own renewer."""
    global _renewers_lock
    _renewers.clear()
    _renewers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def close_all() -> None:
    """Stop every renewer of this process (tests, or a worker shutting down cleanly)."""
    with _renewers_lock:
        renewers = list(_renewers.values())
        _renewers.clear()
    for renewer in renewers:
        renewer.close()
