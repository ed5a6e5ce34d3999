"""Subscribe to the coordinator's events: what was granted, released, expired, changed.

async for event in events(kinds=["lease.expired"], names=["gpu:*"]):
    alert(event)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError

from sdk.exceptions import InvalidRequest
from sdk.loop_thread import LoopThread
from sdk.names import matches
from sdk.protocol import EVENT_KINDS, Event, Subjects
from sdk.settings import NatsSettings
from sdk.transport import connect


class EventFilter:
    """Which events a subscriber wants: kinds exactly, names by shell pattern (`gpu:*`)."""

    def __init__(
        self, kinds: Iterable[str] | None = None, names: Iterable[str] | None = None
    ) -> None:
        self.kinds = set(kinds) if kinds else None
        self.names = list(names) if names else None
        unknown = (self.kinds or set()) - set(EVENT_KINDS)
        if unknown:
            raise InvalidRequest(
                f"unknown event kind(s) {sorted(unknown)}: choose from {', '.join(EVENT_KINDS)}",
                field="kinds",
            )

    def __call__(self, event: Event) -> bool:
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if self.names is None:
            return True
        return any(matches(n, p) for n in event.names for p in self.names)


async def events(
    kinds: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    settings: NatsSettings | None = None,
    *,
    nc: NATS | None = None,
    max_buffered: int = 10_000,
) -> AsyncIterator[Event]:
    """Follow events live, as the coordinator publishes them, filtered."""
    settings = settings or NatsSettings()
    wanted = EventFilter(kinds, names)
    own = nc is None
    conn = nc or await connect(settings, "gcl-events")
    queue: asyncio.Queue[Event] = asyncio.Queue(max_buffered)

    async def on_message(msg: Msg) -> None:
        with contextlib.suppress(ValidationError, asyncio.QueueFull):
            event = Event.model_validate_json(msg.data)
            if wanted(event):
                queue.put_nowait(event)

    sub = await conn.subscribe(Subjects(settings.prefix).all_events, cb=on_message)
    try:
        while True:
            yield await queue.get()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if own:
            await conn.close()


def iter_events(
    kinds: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    settings: NatsSettings | None = None,
) -> Iterator[Event]:
    """The sync face of `events()`: a blocking iterator, for scripts."""
    thread = LoopThread("gcl-events")
    stream = events(kinds, names, settings)
    try:
        while True:
            yield thread.run(stream.__anext__())
    finally:
        with contextlib.suppress(Exception):
            thread.run(stream.aclose(), timeout=5)
        thread.stop()
