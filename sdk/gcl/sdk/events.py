"""Subscribe to the coordinator's events: what was granted, released, expired, changed.

    async for event in events(kinds=["lease.expired"], names=["gpu:*"]):
        alert(event)

Three ways to follow:
- live (default): core NATS, from now on; nothing is kept while you are away.
- `since=600` (seconds, a timedelta or a datetime): replay from the JetStream event stream,
  then keep following. `follow=False` stops once caught up.
- `durable="alerts"`: a JetStream consumer kept by the server under that name. A restarted
  subscriber resumes after the last event it handled. An event counts as handled when the loop
  asks for the next one, or stops iterating (break, aclose); a subscriber killed mid-event gets
  that event again (at least once), never an event twice after a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import Error as JetStreamError
from nats.js.errors import FetchTimeoutError, NotFoundError, ServiceUnavailableError
from pydantic import ValidationError

from gcl.protocol import EVENT_KINDS, Event, Subjects
from gcl.protocol.names import matches
from gcl.sdk.exceptions import GCLError, InvalidRequest
from gcl.sdk.loop_thread import LoopThread
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import connect

Since = float | int | str | timedelta | datetime
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
PullSubscription = JetStreamContext.PullSubscription
DURABLE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FETCH_BATCH = 64
POLL_SECONDS = 1.0
ACK_WAIT_SECONDS = 30.0
EPHEMERAL_IDLE_SECONDS = 30.0


def stream_name(prefix: str) -> str:
    """The JetStream stream holding one deployment's events (`gcl` -> `GCL_EVENTS`)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper() + "_EVENTS"


def parse_duration(text: str, field: str = "since") -> float:
    """`90`, `90s`, `10m`, `2h`, `1d` -> seconds; the error says which forms are accepted."""
    match = DURATION.match(text)
    if not match:
        raise InvalidRequest(
            f"{field}={text!r} is not a duration: use a number with an optional unit, "
            "ms, s, m, h, d or w (e.g. 90s, 10m, 2h)",
            field=field,
        )
    return float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]


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
    durable: str | None = None,
    since: Since | None = None,
    follow: bool = True,
) -> AsyncGenerator[Event, None]:
    """Follow events, filtered: live, or from the stored stream when `durable` or `since` is set.

    `since` is seconds ago, a duration string (`10m`), a timedelta or an aware datetime. It
    applies to a durable consumer only when it is first created; afterwards the
    consumer resumes where it left off. A new durable without `since` starts with new events.
    """
    settings = settings or NatsSettings()
    wanted = EventFilter(kinds, names)
    start = _start_time(since)
    if durable is not None and not DURABLE_NAME.match(durable):
        raise InvalidRequest(
            f"durable name {durable!r} must be 1-64 letters, digits, '-' or '_'", field="durable"
        )
    if durable is None and start is None and not follow:
        raise InvalidRequest("follow=False needs since= or durable= (live events never end)")
    own = nc is None
    conn = nc or await connect(settings, "gcl-events")
    try:
        if durable is None and start is None:
            source = _live(conn, settings, wanted, max_buffered)
        else:
            source = _stored(conn, settings, wanted, durable, start, follow)
        async with contextlib.aclosing(source) as stream:
            async for event in stream:
                yield event
    finally:
        if own:
            with contextlib.suppress(Exception):
                await conn.close()


async def _live(
    conn: NATS, settings: NatsSettings, wanted: EventFilter, max_buffered: int
) -> AsyncGenerator[Event, None]:
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


def _start_time(since: Since | None) -> datetime | None:
    """Turn `since` (how long ago, or a point in time) into a UTC datetime."""
    if since is None:
        return None
    if isinstance(since, str):
        since = parse_duration(since)
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise InvalidRequest("since= needs a timezone-aware datetime", field="since")
        return since.astimezone(UTC)
    ago = since if isinstance(since, timedelta) else timedelta(seconds=float(since))
    if ago < timedelta(0):
        raise InvalidRequest("since= must not be negative (it means how long ago)", field="since")
    return datetime.now(UTC) - ago


def _consumer_config(durable: str | None, start: datetime | None) -> ConsumerConfig:
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT if durable else AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME if start else DeliverPolicy.NEW,
        opt_start_time=start,
        max_ack_pending=10_000,
        description="gcl events subscriber",
    )
    if durable:
        config.ack_wait = ACK_WAIT_SECONDS
    else:
        config.inactive_threshold = EPHEMERAL_IDLE_SECONDS
    return config


async def _subscribe(
    conn: NATS, settings: NatsSettings, durable: str | None, start: datetime | None
) -> PullSubscription:
    stream = stream_name(settings.prefix)
    js = conn.jetstream(timeout=settings.request_timeout)
    try:
        return await js.pull_subscribe(
            Subjects(settings.prefix).all_events,
            durable=durable,
            stream=stream,
            config=_consumer_config(durable, start),
        )
    except (NotFoundError, ServiceUnavailableError) as exc:
        raise GCLError(
            f"no stored events: stream {stream} is missing on {settings.nats_url} ({exc}). "
            "The coordinator creates it at start when NATS runs with JetStream (`gcl up` "
            "does; for your own NATS use `nats-server -js`). Without it only live events "
            "flow: drop since=/durable= (or --since) to follow them."
        ) from exc


async def _stored(
    conn: NATS,
    settings: NatsSettings,
    wanted: EventFilter,
    durable: str | None,
    start: datetime | None,
    follow: bool,
) -> AsyncGenerator[Event, None]:
    """Pull from the stream; ack an event when the caller comes back for the next one."""
    sub = await _subscribe(conn, settings, durable, start)
    fetched: list[Msg] = []
    unacked: Msg | None = None
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        last_seq = 0
        while follow or pending > 0:
            fetched = await _fetch(sub, pending)
            if not fetched and not follow:
                return
            while fetched:
                msg = fetched.pop(0)
                pending = msg.metadata.num_pending or 0
                seq = msg.metadata.sequence.stream
                event = _decode(msg) if seq > last_seq else None
                last_seq = max(last_seq, seq)
                if event is None or not wanted(event):
                    await _ack(msg, durable)
                    continue
                unacked = msg
                yield event
                unacked = None
                await _ack(msg, durable)
    finally:
        await _settle(unacked, fetched, durable)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _fetch(sub: PullSubscription, pending: int) -> list[Msg]:
    """A batch while there is a backlog; one at a time when caught up (no added latency)."""
    batch = min(max(pending, 1), FETCH_BATCH)
    try:
        msgs: list[Msg] = await sub.fetch(batch, timeout=POLL_SECONDS)
    except (NatsTimeout, TimeoutError, FetchTimeoutError):
        return []
    except JetStreamError as exc:
        raise GCLError(f"reading the event stream failed: {exc}") from exc
    return msgs


def _decode(msg: Msg) -> Event | None:
    try:
        return Event.model_validate_json(msg.data)
    except ValidationError:
        return None


async def _ack(msg: Msg, durable: str | None) -> None:
    if durable:
        await msg.ack()


async def _settle(unacked: Msg | None, fetched: list[Msg], durable: str | None) -> None:
    """On stop: the event the caller last saw is handled; fetched-but-unseen ones go back now."""
    if not durable:
        return
    with contextlib.suppress(Exception):
        if unacked is not None:
            await unacked.ack_sync(timeout=2)
        for msg in fetched:
            await msg.nak()


async def _next(stream: AsyncGenerator[Event, None]) -> Event:
    return await anext(stream)


def iter_events(
    kinds: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    settings: NatsSettings | None = None,
    *,
    durable: str | None = None,
    since: Since | None = None,
    follow: bool = True,
) -> Iterator[Event]:
    """The sync face of `events()`: a blocking iterator, for scripts."""
    thread = LoopThread("gcl-events")
    stream = events(kinds, names, settings, durable=durable, since=since, follow=follow)
    try:
        while True:
            try:
                yield thread.run(_next(stream))
            except StopAsyncIteration:
                return
    finally:
        with contextlib.suppress(Exception):
            thread.run(stream.aclose(), timeout=5)
        thread.stop()
