"""The live feed: owns the connection, turns events into coalesced batches, watches health.

Runs as the app's one exclusive worker. Events only update a pending `Batch` (latest figures
per limit win); a flush every `flush_seconds` hands the batch to the UI, so thousands of
events per second cost the UI at most one update per limit per flush. A slow resync heals
anything missed, and a ping tells "NATS is gone" apart from "the coordinator is not answering".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gcl.sdk.exceptions import GCLError
from gcl.tui.model import Batch
from gcl.tui.source import DataSource

log = logging.getLogger("gcl.tui")


class Status(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    NO_COORDINATOR = "coordinator not answering"


@dataclass(frozen=True)
class Link:
    """Connection state for the indicator: a status and a sentence about it."""

    status: Status
    detail: str = ""


@dataclass(frozen=True)
class Timing:
    flush_seconds: float = 0.1
    health_seconds: float = 2.0
    resync_seconds: float = 10.0
    retry_seconds: float = 1.0


class Feed:
    """`await feed.run()` until cancelled; reports through `on_batch` and `on_link`."""

    def __init__(
        self,
        source: DataSource,
        on_batch: Callable[[Batch], None],
        on_link: Callable[[Link], None],
        timing: Timing | None = None,
    ) -> None:
        self.source = source
        self.on_batch = on_batch
        self.on_link = on_link
        self.timing = timing or Timing()
        self.link = Link(Status.CONNECTING, f"connecting to {source.label}")
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._stale = True
        self._listing: Batch | None = None  # figures from events that came during a resync

    async def run(self) -> None:
        """Keep a session going for ever: every failure is reported, then retried."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # never let the dashboard die on a surprise
                self._report(Status.RECONNECTING, _explain(exc))
            finally:
                with contextlib.suppress(Exception):
                    await self.source.close()
            await asyncio.sleep(self.timing.retry_seconds)

    async def _session(self) -> None:
        self._report(Status.CONNECTING, f"connecting to {self.source.label}")
        await self.source.open(self._on_link)
        self._stale = True
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._pump())
            tasks.create_task(self._flush_loop())
            tasks.create_task(self._health_loop())

    def request_resync(self) -> None:
        """Reload every limit at the next chance (after a change whose event may be late)."""
        self._stale = True
        self._wake.set()

    def _on_link(self, up: bool) -> None:
        if up:
            self._stale = True
            self._wake.set()
        else:
            self._report(Status.RECONNECTING, f"lost NATS at {self.source.label}; reconnecting")

    async def _pump(self) -> None:
        async for event in self.source.events():
            self._pending.add_event(event)
            if self._listing is not None:
                self._listing.add_figures(event)
            if event.kind == "coordinator.started":
                self._stale = True
                self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.flush_seconds)
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, Batch()
            self.on_batch(batch)

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_sync = loop.time()
        while True:
            if await self._healthy():
                due = loop.time() - last_sync >= self.timing.resync_seconds
                if (self._stale or due) and await self._resync():
                    last_sync = loop.time()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timing.health_seconds)

    async def _healthy(self) -> bool:
        if not self.source.link_up:
            self._report(Status.RECONNECTING, f"lost NATS at {self.source.label}; reconnecting")
            return False
        try:
            coordinator = await self.source.ping()
        except GCLError as exc:
            self._stale = True
            self._report(Status.NO_COORDINATOR, str(exc))
            return False
        self._report(Status.CONNECTED, f"{self.source.label} · coordinator {coordinator}")
        return True

    async def _resync(self) -> bool:
        """Reload every limit: heals missed events and state changed while we were away.

        Events that come while the listing is under way are applied again on top of it: the
        listing may predate them (a limit created meanwhile was dropped by the snapshot, and
        shown again only at the next resync)."""
        self._listing = Batch()
        try:
            limits = await self.source.list_limits()
        except GCLError as exc:
            self._stale = True
            self._report(Status.NO_COORDINATOR, str(exc))
            return False
        finally:
            during, self._listing = self._listing, None
        self._stale = False
        snapshot = Batch.full(limits)
        snapshot.merge(during)
        self._pending.merge(snapshot)
        self.flush()
        return True

    def _report(self, status: Status, detail: str) -> None:
        link = Link(status, detail)
        if link != self.link:
            self.link = link
            self.on_link(link)


def _explain(exc: BaseException) -> str:
    """The first real error inside a TaskGroup's exception group; surprises are logged."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, GCLError):
        return str(exc)
    log.error("dashboard feed failed; retrying", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"
