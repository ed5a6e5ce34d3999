"""The coordinator service: NATS in, state machine, database, NATS out.

    message ──► parse ──► Engine step ──► Changes ──► outbox ──► commit (thread) ──► replies,
                                                                                   notices, events

Steps run one at a time on the event loop. While a commit runs, later steps pile up in the
outbox and are committed together: one transaction for many grants under load. Replies and
events leave in order, and only after the changes they reveal are on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from gcl.coordinator.changes import Changes
from gcl.coordinator.clock import Clock, SystemClock
from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.event_stream import ensure_stream
from gcl.coordinator.explain import wait_detail
from gcl.coordinator.leadership import Leadership
from gcl.coordinator.metrics import MetricsEndpoint, start_metrics
from gcl.coordinator.settings import CoordinatorSettings
from gcl.coordinator.store import Deposed, Store, safe_url
from gcl.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    AcquireRequest,
    CoordinatorStatus,
    Deleted,
    ErrorBody,
    Event,
    LeaseListRequest,
    LeaseRef,
    LimitGetRequest,
    LimitListRequest,
    LostNotice,
    Message,
    Pong,
    Reply,
    Revoked,
    Subjects,
)
from gcl.protocol import operations as ops
from gcl.protocol.operations import Operation
from gcl.sdk.exceptions import GCLError
from gcl.sdk.transport import connect
from gcl.sdk.version import VERSION

log = logging.getLogger("gcl.coordinator")


class CoordinatorConflict(GCLError):
    """Another coordinator already answers on this prefix: two would over-grant."""


Handler = Callable[[Any], BaseModel]

# Replies that reveal no grant may leave before the commit they ride with: if that commit is
# lost in a crash, a released lease comes back and simply expires (slots held too long, never
# granted twice). Everything else waits for its commit, in order.
MAX_FIELD_ECHO = 200  # an error echoes at most this much of the caller's input
_REVEAL_NOTHING = frozenset({ops.RENEW.name, ops.RELEASE.name, ops.PING.name})
_PAGED = (LimitGetRequest, LimitListRequest, LeaseListRequest)  # listings: page size `limit`


class Coordinator:
    """One running coordinator: `start()` then `stop()`, or `run()` until cancelled."""

    def __init__(self, settings: CoordinatorSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = Engine(self.clock, settings.keepalive_seconds, settings.bounds())
        self.store = Store(settings.db_url, settings.sqlite_synchronous)
        self.subjects = Subjects(settings.prefix)
        self.id = uuid.uuid4().hex[:12]
        self.started_at = 0.0
        self.nc: NATS | None = None
        self._outbox = Changes()
        self._replies: list[tuple[str, bytes]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._failed = asyncio.Event()
        self._handlers = self._routes()
        self.observers: list[Callable[[Event], None]] = []
        self.metrics: MetricsEndpoint | None = None
        self.leading = False  # True from taking the lead until stepping down
        self.leadership = Leadership(settings.db_url, settings.prefix, self.id)
        self._deposed: str | None = None
        self._request_subs: list[Subscription] = []
        self._unsubscribing: asyncio.Task[None] | None = None
        self.unanswerable = 0  # requests that came without a reply subject, dropped

    def _routes(self) -> dict[str, tuple[type[Message], Handler]]:
        e = self.engine
        handlers: dict[Operation[Any, Any], Handler] = {
            ops.ACQUIRE: e.acquire,
            ops.RENEW: lambda r: e.renew(r.lease_id, r.secret),
            ops.RELEASE: lambda r: e.release(r.lease_id, r.secret),
            ops.WAIT_KEEPALIVE: lambda r: e.keepalive(r.request_id, r.secret),
            ops.WAIT_WITHDRAW: lambda r: e.withdraw(r.request_id, r.secret, r.reason),
            ops.WAIT_INSPECT: lambda r: wait_detail(e, r.request_id, r.secret),
            ops.LIMIT_CREATE: e.create_limit,
            ops.LIMIT_GET: lambda r: e.detail(r.name, r.limit, r.cursor),
            ops.LIMIT_LIST: lambda r: e.page_limits(r.pattern, r.limit, r.cursor),
            ops.LIMIT_UPDATE: e.update_limit,
            ops.LIMIT_DELETE: lambda r: Deleted(
                name=r.name, released_leases=e.delete_limit(r.name)
            ),
            ops.LEASE_LIST: lambda r: e.page_leases(r.name, r.limit, r.cursor),
            ops.LEASE_REVOKE: self._revoke,
            ops.PING: lambda r: Pong(
                coordinator_id=self.id, started_at=self.started_at, version=VERSION
            ),
        }
        # admin.status is answered by every coordinator, standby or not: its own subscription.
        assert set(handlers) == set(ops.OPERATIONS) - {ops.STATUS}, "an operation lacks a handler"
        return {op.name: (op.request, handler) for op, handler in handlers.items()}

    def status(self) -> CoordinatorStatus:
        """What `gcl status` shows of this coordinator."""
        return CoordinatorStatus(
            coordinator_id=self.id,
            role="leader" if self.leading else "standby",
            epoch=self.store.epoch if self.leading else None,
            since=self.started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=VERSION,
        )

    def _revoke(self, ref: LeaseRef) -> Revoked:
        self.engine.revoke(ref.lease_id)
        return Revoked(lease_id=ref.lease_id)

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, stand by until leading (PostgreSQL), take the lead, load, then serve.

        On SQLite the file lock and a NATS ping make sure we are alone; on PostgreSQL the
        election decides, and the epoch taken with the lead fences whoever led before."""
        self.nc = await connect(self.settings, f"gcl-coordinator-{self.id}")
        try:
            await self._answer_status()
            await self.leadership.wait_for_lead()
            limits, leases = await asyncio.to_thread(self.store.open, self.id)
            if not self.leadership.elected:
                await self._ensure_alone()
            await ensure_stream(self.nc, self.settings)  # warns, never raises
            self.metrics = await start_metrics(self.engine, self.settings, self.observers)
        except BaseException:
            self.leadership.release()
            await asyncio.to_thread(self.store.close)
            with contextlib.suppress(Exception):
                await self.nc.close()
            raise
        self.leading = True
        self.engine.restore(limits, leases)
        self._outbox.merge(self.engine.take_changes())
        self.started_at = self.clock.wall()
        for operation in self._handlers:
            await self._subscribe(self.subjects.op(operation), self._on_message)
            if ops.BY_NAME[operation].admin:  # `{op}.{user}`: the sender's NATS identity
                await self._subscribe(self.subjects.op(operation) + ".*", self._on_message)
        self._emit_started(len(limits), len(self.engine.leases))
        self.leadership.watch(lambda: self.nc is not None and self.nc.is_connected, self._step_down)
        self._reschedule()
        log.info(
            "coordinator %s leads %s.* (epoch %d) on %s, %d limits, %d leases restored (db %s)",
            self.id,
            self.settings.prefix,
            self.store.epoch,
            self.settings.nats_url,
            len(limits),
            len(self.engine.leases),
            safe_url(self.settings.db_url),
        )

    async def _subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
        assert self.nc is not None
        self._request_subs.append(await self.nc.subscribe(subject, cb=cb))

    async def _answer_status(self) -> None:
        """Leader or standby, every coordinator answers `admin.status` (`gcl status`)."""
        assert self.nc is not None
        subject = self.subjects.op(ops.STATUS.name)
        for pattern in (subject, subject + ".*"):
            await self.nc.subscribe(pattern, cb=self._on_status)

    async def _on_status(self, msg: Msg) -> None:
        if not msg.reply or self.nc is None:
            return
        try:
            self._check_size(msg.data)
            _parse(ops.STATUS.request, msg.data)  # hostile input is refused here as anywhere
            payload = _ok(self.status())
        except Refusal as refusal:
            payload = _error(refusal.code, refusal.message, refusal.field)
        await _publish(self.nc, msg.reply, payload)

    def _step_down(self, reason: str) -> None:
        """No longer the leader (or not sure): stop serving at once, send nothing owed.

        Nothing uncommitted was announced, and the new leader reloads what was committed; so
        dropping the outbox loses nothing anyone was told. The process then exits non-zero
        for its supervisor to restart it as a standby."""
        if self._deposed is not None:
            return
        self._deposed = reason
        self.leading = False
        log.error("stepping down: %s", reason)
        self._outbox = Changes()
        self._replies = []
        if self._timer is not None:
            self._timer.cancel()
        subs, self._request_subs = self._request_subs, []
        self.leadership.release()
        self._unsubscribing = asyncio.get_running_loop().create_task(
            self._unsubscribe(subs, reason)
        )
        self._failed.set()

    async def _unsubscribe(self, subs: list[Subscription], reason: str) -> None:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.nc is not None:  # best effort: the stream stores it if NATS takes it
            event = Event(kind="coordinator.stepped_down", at=self.clock.wall(), reason=reason)
            await _publish(
                self.nc, self.subjects.event(event.kind), event.model_dump_json().encode()
            )

    async def _ensure_alone(self) -> None:
        assert self.nc is not None
        try:
            msg = await self.nc.request(self.subjects.op(ops.PING.name), b"{}", timeout=0.5)
        except (NoRespondersError, NatsTimeout, TimeoutError):
            return
        raise CoordinatorConflict(
            f"another coordinator already serves {self.settings.prefix}.* on "
            f"{self.settings.nats_url} ({msg.data[:200]!r}): stop it, or use another --prefix"
        )

    def _emit_started(self, limits: int, leases: int) -> None:
        reason = (
            f"coordinator {self.id} leads at epoch {self.store.epoch}: {limits} limits, "
            f"{leases} leases restored"
        )
        self._outbox.events.append(
            Event(kind="coordinator.started", at=self.started_at, reason=reason)
        )
        if self.leadership.elected:
            elected = Event(kind="coordinator.elected", at=self.started_at, reason=reason)
            self._outbox.events.append(elected)
        self._kick()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until cancelled, or until the database stays broken past db_retry_seconds."""
        await self.start()
        if ready is not None:
            ready()
        try:
            await self.failed()
        finally:
            await self.stop()

    async def failed(self) -> None:
        """Wait until the coordinator can no longer serve (its database kept failing, or it
        is no longer the leader); raise."""
        await self._failed.wait()
        if self._deposed is not None:
            raise Deposed(f"coordinator {self.id} stepped down: {self._deposed}")
        raise GCLError("the database kept failing; stopping so a restart reloads the truth")

    async def stop(self) -> None:
        """Finish the commit in flight, send what it owes, then let go of NATS and the DB."""
        if self._timer is not None:
            self._timer.cancel()
        self.leadership.release()
        if self._flusher is not None and not self._failed.is_set():
            await asyncio.wait_for(asyncio.shield(self._flusher), timeout=10)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        if self.metrics is not None:
            await self.metrics.stop()
        await asyncio.to_thread(self.store.close)

    # --- messages ---------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:  # nobody to answer: a request without a reply subject is not served
            self.unanswerable += 1
            return
        operation, actor = self._route(msg.subject)
        payload = self._step(operation, msg.data, msg.reply, actor)
        if operation in _REVEAL_NOTHING and self.nc is not None:
            await _publish(self.nc, msg.reply, payload)
        else:
            self._replies.append((msg.reply, payload))
        self._kick()
        self._reschedule()

    def _route(self, subject: str) -> tuple[str, str | None]:
        """The operation, and for `{prefix}.admin.{op}.{user}` the user NATS let send it."""
        operation = subject[len(self.settings.prefix) + 1 :]
        if operation in self._handlers:
            return operation, None
        operation, _, actor = operation.rpartition(".")
        return operation, actor

    def _step(self, operation: str, data: bytes, reply_to: str, actor: str | None = None) -> bytes:
        """Run one request through the engine; every failure becomes an error reply."""
        try:
            request_type, handler = self._handlers[operation]
            self._check_size(data)
            request = _parse(request_type, data)
            if isinstance(request, AcquireRequest):
                _check_notify(request.notify, reply_to)
            reply = _ok(handler(request))
            while (
                len(reply) > self._max_reply and isinstance(request, _PAGED) and request.limit > 1
            ):
                # a page of long items: halve it (a listing is a pure read, safe to redo)
                request = request.model_copy(update={"limit": request.limit // 2})
                reply = _ok(handler(request))
            if actor is not None:
                _stamp(self.engine.changes, actor)
            if len(reply) > self._max_reply:
                return _error(
                    "invalid_request",
                    f"the answer ({len(reply):,} bytes) exceeds "
                    "what NATS carries: narrow it (a limit name or pattern)",
                )
            return reply
        except Refusal as refusal:
            return _error(refusal.code, refusal.message, refusal.field)
        except Exception:
            log.exception("internal error handling %s", operation)
            return _error("internal", "the coordinator failed on this request; see its log")
        finally:
            self._outbox.merge(self.engine.take_changes())

    def _check_size(self, data: bytes) -> None:
        """Refuse an oversized payload before spending any parsing on it."""
        cap = self.settings.max_request_bytes
        if len(data) > cap:
            raise Refusal(
                "invalid_request",
                f"the request is {len(data):,} bytes; the coordinator accepts at most {cap:,} "
                "(max_request_bytes): send less, or raise GCL_MAX_REQUEST_BYTES on it",
            )

    @property
    def _max_reply(self) -> int:
        return int(self.nc.max_payload) if self.nc is not None else 1024 * 1024

    # --- outbox -----------------------------------------------------------------------------

    def _kick(self) -> None:
        """Make sure the one flusher runs: it alone sends, so messages leave in order."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _take_replies(self) -> list[tuple[str, bytes]]:
        replies, self._replies = self._replies, []
        return replies

    async def _flush(self) -> None:
        while self._outbox or self._replies:
            batch, replies = self._outbox, self._take_replies()
            self._outbox = Changes()
            if batch.durable and not await self._commit(batch):
                self._failed.set()
                return
            await self._send(batch, replies)

    @property
    def _commit_inline(self) -> bool:
        """A SQLite commit without fsync takes ~45 us, half the cost of a hop to a thread;
        fsync'ing SQLite and PostgreSQL commits can take milliseconds, so they run off-loop."""
        return self.store.dialect == "sqlite" and self.settings.sqlite_synchronous.upper() != "FULL"

    async def _commit(self, batch: Changes) -> bool:
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.05
        while True:
            try:
                if self._commit_inline:
                    self.store.apply(batch)
                else:
                    await asyncio.to_thread(self.store.apply, batch)
                return True
            except Deposed as exc:  # another coordinator leads: never retry, stop serving
                self._step_down(str(exc))
                return False
            except Exception:
                if time.monotonic() > deadline:
                    log.critical(
                        "commit failed for %.0fs; giving up", self.settings.db_retry_seconds
                    )
                    return False
                log.exception("commit failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _send(self, batch: Changes, replies: list[tuple[str, bytes]]) -> None:
        """Replies first, then notices to waiters, then events: in causal order."""
        nc = self.nc
        if nc is None:
            return
        for subject, data in replies:
            await _publish(nc, subject, data)
        for inbox, notice in batch.notices:
            await _publish(nc, inbox, notice.model_dump_json().encode())
        for event in batch.events:
            await _publish(nc, self.subjects.event(event.kind), event.model_dump_json().encode())
            self._observe(event)

    def _observe(self, event: Event) -> None:
        """In-process listeners (metrics): called after the event is durable and published."""
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.exception("event observer failed")

    # --- timers -----------------------------------------------------------------------------

    def _reschedule(self) -> None:
        """Arm one timer for the engine's next deadline (expiry, abandoned waiter, decay)."""
        deadline = self.engine.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.clock.now())
        self._timer_at = deadline
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.engine.tick()
        except Exception:
            log.exception("internal error in tick")
        self._outbox.merge(self.engine.take_changes())
        self._kick()
        self._reschedule()


async def _publish(nc: NATS, subject: str, data: bytes) -> None:
    try:
        await nc.publish(subject, data)
    except Exception as exc:  # a closed connection or a bad reply subject must not kill us
        log.warning("could not publish to %s: %s", subject[:100], exc)


def _check_notify(notify: str | None, reply: str) -> None:
    """Wait notices go only to the requester's own inbox: `notify`'s parent must be a prefix
    of the request's reply subject (`_INBOX.abc` for a reply on `_INBOX.def.1` is fine,
    `gcl.events.x` or another user's `_GCL_INBOX.bob.x` is not)."""
    if notify is None:
        return
    parent = notify.rpartition(".")[0]
    if not parent or not reply.startswith(parent + "."):
        raise Refusal(
            "forbidden",
            "notify must be an inbox under this connection's own inbox prefix (the prefix "
            "of the request's reply subject)",
            "notify",
        )


def _parse(request_type: type[Message], data: bytes) -> Message:
    try:
        request = request_type.model_validate_json(data or b"{}")
    except ValidationError as exc:
        _check_version(data)
        raise _invalid(exc) from None
    _check_version_number(request.v)
    return request


def _check_version(data: bytes) -> None:
    """A newer client's request fails as a version mismatch, not as 'unknown field'."""
    try:
        version = json.loads(data).get("v", PROTOCOL_VERSION)
    except (ValueError, AttributeError, RecursionError):
        return
    if isinstance(version, int) and not isinstance(version, bool):
        _check_version_number(version)


def _check_version_number(version: int) -> None:
    if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        raise Refusal(
            "unsupported_version",
            f"protocol v{str(version)[:20]} is not supported: this coordinator speaks "
            f"v{MIN_PROTOCOL_VERSION} to v{PROTOCOL_VERSION}; upgrade the older side",
            "v",
        )


def _stamp(changes: Changes, actor: str) -> None:
    """Name the operator behind an admin request on the events and loss notices it caused."""
    for event in changes.events:
        event.actor = actor
    changes.notices[:] = [
        (inbox, n.model_copy(update={"actor": actor}) if isinstance(n, LostNotice) else n)
        for inbox, n in changes.notices
    ]


def _invalid(exc: ValidationError) -> Refusal:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"])[:MAX_FIELD_ECHO] or None
    if first["type"] == "json_invalid":
        return Refusal("invalid_request", "the payload is not valid JSON", None)
    where = f"field {field!r}: " if field else ""
    return Refusal("invalid_request", f"{where}{first['msg'][:MAX_FIELD_ECHO]}", field)


def _ok(result: BaseModel) -> bytes:
    """The reply envelope around a result, serialised once (not dumped, re-validated, dumped)."""
    return b'{"v":%d,"ok":true,"result":%s}' % (PROTOCOL_VERSION, result.model_dump_json().encode())


def _error(code: str, message: str, field: str | None = None) -> bytes:
    body = ErrorBody(code=code, message=message, field=field)
    return Reply(ok=False, error=body).model_dump_json().encode()
