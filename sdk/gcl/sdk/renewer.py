"""Background lease renewal on a thread of its own, with a NATS connection of its own.

A body that holds the GIL in bursts or blocks the caller's event loop for longer than the TTL
must not lose its lease, so renewal never runs on the caller's loop. One renewer serves every
lease of a process; each lease renews at a third of its TTL and retries transient failures a
few times per period. Only an answer from the coordinator ("that lease is gone") marks a lease
lost: a coordinator that is merely unreachable may come back and restore it. Usually the
coordinator has pushed that news already (see `client`); renewal is the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from gcl.protocol import RENEW, HeldLease
from gcl.sdk.exceptions import GCLError, LeaseLost, LeaseNotFound
from gcl.sdk.leases import Lease
from gcl.sdk.loop_thread import LoopThread
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import Rpc, connect

log = logging.getLogger("gcl.sdk")
RETRIES_PER_PERIOD = 3
OnLost = Callable[[Lease], None]


class Renewer:
    """Renews every tracked lease at a third of its TTL, from its own thread and connection.

    `track` and `untrack` only touch a locked table, in O(1): a new lease waits in `_new` until
    the renewer next looks, and only the leases still held then join its schedule (a heap).
    While leases come and go, the renewer looks once per renewal period (the shortest it saw
    tracked since it last looked), so a lease tracked meanwhile is due no sooner than that look:
    the thread is woken only by a lease due sooner than the renewer would look anyway (the
    first after a quiet spell, or one with a shorter TTL). A block shorter than its lease's
    first renewal point costs two dict operations and no cross-thread wake-up.
    """

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._tracked: dict[int, tuple[Lease, OnLost | None]] = {}
        self._new: dict[int, float] = {}  # tracked since the renewer last looked: when due
        self._due: list[tuple[float, int]] = []
        self._keys = itertools.count(1)
        self._sleep_until = math.inf
        self._period = math.inf  # the shortest period tracked since the renewer last looked
        self._thread = LoopThread("gcl-renewer")
        self._wake = asyncio.Event()
        self._rpc: Rpc | None = None
        self._main = self._thread.submit(self._run())

    def track(self, lease: Lease, on_lost: OnLost | None = None) -> None:
        """Renew `lease` until `untrack`; call `on_lost` (from the renewer thread) if it is lost."""
        if lease.info is None or lease.info.mode != "concurrency" or lease.long_lived:
            return  # rate grants are not held; long-lived leases are not renewed
        period = lease.info.ttl / 3
        due = time.monotonic() + period
        with self._lock:
            lease.renewal_key = key = next(self._keys)  # never reused, unlike id()
            self._tracked[key] = (lease, on_lost)
            self._new[key] = due
            if period < self._period:
                self._period = period
            wake = due < self._sleep_until
        if wake:
            self._thread.call_soon(self._wake.set)

    def untrack(self, lease: Lease) -> None:
        with self._lock:
            self._tracked.pop(lease.renewal_key, None)
            self._new.pop(lease.renewal_key, None)

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # first: a lease tracked from here on wakes us if it must
            due, timeout = self._take_due()
            for lease, on_lost in due:
                asyncio.get_running_loop().create_task(self._renew(lease, on_lost))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _take_due(self) -> tuple[list[tuple[Lease, OnLost | None]], float]:
        """The leases due now, and how long to sleep before looking again."""
        now = time.monotonic()
        due = []
        with self._lock:
            for key, at in self._new.items():  # still held: on the schedule from now on
                heapq.heappush(self._due, (at, key))
            self._new.clear()
            while self._due and (self._due[0][0] <= now or self._due[0][1] not in self._tracked):
                _, key = heapq.heappop(self._due)  # due, or released since: gone either way
                entry = self._tracked.get(key)
                if entry is not None:
                    due.append(entry)
            first = self._due[0][0] if self._due else math.inf
            until = self._sleep_until = min(first, now + self._period, now + 60.0)
            self._period = math.inf
        return due, max(0.0, until - now)

    def _reschedule(self, lease: Lease) -> None:
        assert lease.info is not None
        with self._lock:
            if lease.renewal_key in self._tracked:
                due = time.monotonic() + lease.info.ttl / 3
                heapq.heappush(self._due, (due, lease.renewal_key))
        self._wake.set()  # on the renewer's own loop: it recomputes when to wake next

    async def _rpc_ready(self) -> Rpc:
        if self._rpc is None:
            nc: NATS = await connect(self.settings, f"gcl-renewer-{os.getpid()}")
            self._rpc = Rpc(nc, self.settings)
        return self._rpc

    async def _renew(self, lease: Lease, on_lost: OnLost | None) -> None:
        if lease.lost:  # the coordinator pushed the news already: nothing left to renew
            self.untrack(lease)
            return
        try:
            await self._renew_once(lease)
        except (LeaseLost, LeaseNotFound) as exc:
            if self._is_tracked(lease):  # else the block ended and released it meanwhile
                self._lost(lease, on_lost, exc)
            return
        self._reschedule(lease)

    def _is_tracked(self, lease: Lease) -> bool:
        with self._lock:
            return lease.renewal_key in self._tracked

    def _lost(self, lease: Lease, on_lost: OnLost | None, exc: Exception) -> None:
        self.untrack(lease)
        if not lease.mark_lost(str(exc)):
            return  # heard already (a pushed notice): logged and hooked then
        log.error(
            "lease %s on %s was lost: %s. The block no longer owns the slots; LeaseLost is "
            "raised when it exits",
            lease.lease_id,
            lease.names,
            exc,
        )
        if on_lost is not None:
            on_lost(lease)

    async def _renew_once(self, lease: Lease) -> None:
        """One renewal, retrying transient failures a few times within the period."""
        assert lease.info is not None
        period = lease.info.ttl / 3
        timeout = max(0.2, min(self.settings.request_timeout, period / RETRIES_PER_PERIOD))
        for attempt in range(RETRIES_PER_PERIOD):
            try:
                rpc = await self._rpc_ready()
                held = HeldLease(lease_id=lease.info.lease_id, secret=lease.secret)
                await rpc.call(RENEW, held, timeout=timeout)
                return
            except (LeaseLost, LeaseNotFound):
                raise
            except GCLError as exc:
                log.warning(
                    "renewal of lease %s failed (attempt %d/%d): %s",
                    lease.lease_id,
                    attempt + 1,
                    RETRIES_PER_PERIOD,
                    exc,
                )
                await asyncio.sleep(min(0.2 * 2**attempt, period / RETRIES_PER_PERIOD))

    def close(self) -> None:
        async def shutdown() -> None:
            self._main.cancel()
            if self._rpc is not None:
                with contextlib.suppress(Exception):  # NATS died: nothing to say goodbye to
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
