"""The long-lived alerter: events in, rule evaluation, alerts out to actions.

Live by default: it subscribes first, then reads a snapshot of the limits and their waiters
through the admin API, so it knows what is going on before the next event. With a durable
name it reads the stored stream instead and resumes after the last event it handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError

from gcl.alerting.actions import Dispatcher
from gcl.alerting.alert import Alert
from gcl.alerting.evaluator import Evaluator
from gcl.alerting.rules import RuleFile
from gcl.protocol import Event, LimitInfo, Subjects, WaiterInfo
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.events import events
from gcl.sdk.exceptions import GCLError
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import connect

log = logging.getLogger("gcl.alert")
TICK_SECONDS = 0.5
QUEUE_SIZE = 100_000


class Alerter:
    def __init__(
        self,
        rules: RuleFile,
        settings: NatsSettings,
        *,
        durable: str | None = None,
        tick_seconds: float = TICK_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.settings = settings
        self.durable = durable
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.evaluator = Evaluator(rules.rule)
        self.dispatcher = Dispatcher(rules)
        self.sent: list[Alert] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._resync = False

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Until cancelled. Every wait is bounded by the tick, so time-based rules fire on time."""
        nc = await connect(self.settings, "gcl-alert")
        self.dispatcher.start()
        feeder = await self._start_feed(nc)
        try:
            await self._snapshot(nc)
            if ready is not None:
                ready()
            while True:
                await self._step(nc)
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await self.dispatcher.stop()
            with contextlib.suppress(Exception):
                await nc.close()

    async def _step(self, nc: NATS) -> None:
        try:
            event = await asyncio.wait_for(self._queue.get(), self.tick_seconds)
            alerts = self.evaluator.feed(event)
            self._resync = self._resync or event.kind == "coordinator.started"
        except TimeoutError:
            alerts = []
        alerts += self.evaluator.advance(self.clock())
        self._send(alerts)
        if self._resync and self._queue.empty():
            self._resync = False
            await self._snapshot(nc)

    def _send(self, alerts: list[Alert]) -> None:
        self.sent.extend(alerts)
        del self.sent[:-1000]
        self.dispatcher.submit(alerts)

    async def _start_feed(self, nc: NATS) -> asyncio.Task[None]:
        """Subscribed before it returns, so the snapshot that follows misses nothing."""
        if self.durable is not None:
            return asyncio.get_running_loop().create_task(self._pump_durable(nc))

        async def on_message(msg: Msg) -> None:
            with contextlib.suppress(ValidationError, asyncio.QueueFull):
                self._queue.put_nowait(Event.model_validate_json(msg.data))

        sub = await nc.subscribe(Subjects(self.settings.prefix).all_events, cb=on_message)
        await nc.flush()

        async def hold() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        return asyncio.get_running_loop().create_task(hold())

    async def _pump_durable(self, nc: NATS) -> None:
        stream = events(settings=self.settings, nc=nc, durable=self.durable)
        async with contextlib.aclosing(stream) as source:
            async for event in source:
                await self._queue.put(event)

    async def _snapshot(self, nc: NATS) -> None:
        """Current figures and waiters; a coordinator that is not up yet is not fatal."""
        at = self.clock()
        try:
            limits, waiters = await _read_state(nc, self.settings)
        except GCLError as exc:
            log.warning("no snapshot of the limits (%s); learning from events instead", exc)
            return
        self.evaluator.seed(limits, waiters, at)
        self._send(self.evaluator.advance(self.clock()))


async def _read_state(nc: NATS, settings: NatsSettings) -> tuple[list[LimitInfo], list[WaiterInfo]]:
    admin = AsyncAdminClient(settings, nc=nc)
    limits = await admin.list_limits()
    waiters: list[WaiterInfo] = []
    for info in limits:
        if info.waiters and not info.is_template:
            with contextlib.suppress(GCLError):
                waiters.extend((await admin.get_limit(info.name)).waiters)
    return limits, waiters
