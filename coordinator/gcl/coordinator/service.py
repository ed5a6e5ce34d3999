"""The coordinator service: NATS in, state machine, database, NATS out.

    message ──► parse ──► Engine step ──► Changes ──► outbox ──► commit (thread) ──► replies,
                                                                                   notices, events

Steps run one at a time on the event loop. While a commit runs (always on the store's own
thread, never on the loop), later steps pile up in the outbox and are committed together: one
transaction for many grants under load. Replies and events leave in order, and only after the
changes they reveal are on disk. A stalled or failing database therefore delays only what
waits for a commit; how long the oldest change has waited is the store's health.
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
from collections import Counter
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError, SlowConsumerError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from gcl.coordinator.changes import Changes
from gcl.coordinator.clock import Clock, SystemClock
from gcl.coordinator.engine import Engine
from gcl.coordinator.errors import Refusal
from gcl.coordinator.event_stream import ensure_stream, keep_ensuring
from gcl.coordinator.explain import wait_detail
from gcl.coordinator.leadership import Leadership
from gcl.coordinator.metrics import MetricsEndpoint, ServiceCollector, ServiceStats, start_metrics
from gcl.coordinator.settings import CoordinatorSettings
from gcl.coordinator.store import Deposed, Store, safe_url
from gcl.coordinator.store_thread import StoreThread
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
    StoreHealth,
    Subjects,
)
from gcl.protocol import operations as ops
from gcl.protocol.operations import Operation
from gcl.sdk.exceptions import GCLError, StorageError
from gcl.sdk.transport import connect
from gcl.sdk.version import VERSION

log = logging.getLogger("gcl.coordinator")


class CoordinatorConflict(GCLError):
    """Another coordinator already answers on this prefix: two would over-grant."""


Handler = Callable[[Any], BaseModel]

MAX_FIELD_ECHO = 200  # an error echoes at most this much of the caller's input
SLOW_COMMIT_SECONDS = 1.0  # a commit slower than this is logged
# Replies that reveal no grant leave at once, before the commit their step rides with: if that
# commit is lost in a crash, a released lease comes back and simply expires (slots held too
# long, never granted twice). Everything else waits for its commit, in order. Two exceptions:
# a renew or release of a lease whose grant is not committed yet waits for it too; and while
# the store is unhealthy, renew and release are applied in memory but answered `unavailable`.
_REVEAL_NOTHING = frozenset({ops.RENEW.name, ops.RELEASE.name, ops.PING.name})
_PAGED = (LimitGetRequest, LimitListRequest, LeaseListRequest)  # listings: page size `limit`
_LEASE_STEPS = frozenset({ops.RENEW.name, ops.RELEASE.name})
_IN_ORDER = frozenset({ops.ACQUIRE.name, ops.RENEW.name, ops.RELEASE.name})
DROP_LOG_SECONDS = 10.0  # at most one warning about dropped messages this often
YIELD_EVERY = 32  # messages handled back to back before yielding to the loop, if more wait
# How long changes that reveal nothing (releases, renewals) may wait to share the next commit.
# Their replies already left; a crash in this window brings a released lease back until its
# ttl, exactly as a crash before their commit always could. A worker's next acquire usually
# comes within it, so its block pays one commit (one fsync) instead of two in a row.
QUIET_COMMIT_DELAY = 0.01
# Replies that need no commit (renew, release, ping) leave with the commit in flight, if any,
# so a worker's release reply and its next grant share one packet; never later than this.
EARLY_REPLY_WAIT = 0.002
STOP_SECONDS = 7.0  # stop() returns within this, whatever NATS and the database do


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
        self._early: list[tuple[str, bytes]] = []  # replies that need no commit, not yet sent
        self._early_timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._reveal: asyncio.Future[None] | None = None  # wakes a flusher holding a quiet batch
        self._inflight: Changes | None = None  # the batch being committed
        self._store_thread: StoreThread | None = None
        # The store's health: when the oldest uncommitted change was made (monotonic), for the
        # batch being committed and for the outbox behind it, and the last commit error.
        self._inflight_since: float | None = None
        self._dirty_since: float | None = None
        self._last_error: str | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_reported = False
        self.stats = ServiceStats()
        self._subs: dict[str, Subscription] = {}
        self._handled = 0  # messages handled since the last yield to the loop
        self._drops_unlogged: Counter[str] = Counter()
        self._drops_logged_at = -DROP_LOG_SECONDS
        self._drop_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._stopped: bool | None = None  # stop()'s result once stopped
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
        self._stream_setup: asyncio.Task[None] | None = None  # retries a failed stream setup

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
                coordinator_id=self.id,
                started_at=self.started_at,
                version=VERSION,
                store=self.store_health(),
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
        self._store_thread = StoreThread(f"gcl-store-{self.id}")
        try:
            self.nc = await connect(
                self.settings,
                f"gcl-coordinator-{self.id}",
                error_cb=self._on_nats_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            await self._answer_status()
            await self.leadership.wait_for_lead()
            # Heartbeat the lock from now on: loading, the event stream and metrics can take
            # seconds, and PostgreSQL ends a silent lock session after 1.5 s, a standby then
            # takes over, and this process must not serve what it loaded (it once did, for
            # 0.3 s, from a view without the limit: a "not enforced" grant, an over-grant).
            self.leadership.watch(self._nats_connected, self._step_down)
            limits, leases = await self._store_thread.run(self.store.open, self.id)
            if not self.leadership.elected:
                await self._ensure_alone()
            if not await ensure_stream(self.nc, self.settings):  # warns, never raises
                self._stream_setup = asyncio.create_task(keep_ensuring(self.nc, self.settings))
            service = ServiceCollector(self.stats, self.store_health)
            self.metrics = await start_metrics(self.engine, self.settings, self.observers, service)
            self._check_still_leading()
        except BaseException:
            await self._abandon_start()
            raise
        self.leading = self.stats.leading = True
        self.stats.epoch = self.store.epoch
        self.engine.restore(limits, leases)
        self._absorb(self.engine.take_changes())
        self.started_at = self.clock.wall()
        for operation in self._handlers:
            messages, size = self._backlog(operation)
            if operation in _IN_ORDER:
                continue  # below: one subscription for all of them
            subjects = [self.subjects.op(operation)]
            if ops.BY_NAME[operation].admin:  # `{op}.{user}`: the sender's NATS identity
                subjects.append(subjects[0] + ".*")
            for subject in subjects:
                self._subs[subject] = await self.nc.subscribe(
                    subject,
                    cb=self._on_message,
                    pending_msgs_limit=messages,
                    pending_bytes_limit=size,
                )
        # acquire, renew and release on ONE subscription (`{prefix}.*` matches exactly the
        # one-token subjects): nats-py runs each subscription on a task of its own, so on
        # separate ones a worker's release (sent without waiting for its reply) could be
        # handled after the acquire it sent next on the same connection. One subscription
        # keeps NATS's per-connection order.
        messages, size = self._backlog(ops.ACQUIRE.name)
        in_order = self.subjects.op("*")
        self._subs[in_order] = await self.nc.subscribe(
            in_order, cb=self._on_message, pending_msgs_limit=messages, pending_bytes_limit=size
        )
        # The server has every subscription before we say we serve: a request sent right
        # after start-up otherwise could meet "no responders" (a test once did).
        with contextlib.suppress(Exception):  # a NATS outage now is reported by its callbacks
            await self.nc.flush(timeout=5)
        if self._deposed is not None:  # lost the lead while subscribing: serve nothing
            await self._stop_intake()
            await self._abandon_start()
            self._check_still_leading()
        self._emit_started(len(limits), len(self.engine.leases))
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

    async def _abandon_start(self) -> None:
        """Undo a start that failed or lost the lead midway: nothing was served."""
        assert self._store_thread is not None
        self._stopping = True
        if self._stream_setup is not None:
            self._stream_setup.cancel()
        self.leadership.release()
        if self.metrics is not None:
            await _bounded(self.metrics.stop(), 0.5, "stopping the metrics endpoint")
        await self._store_thread.run(self.store.close)
        self._store_thread.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def _nats_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def _check_still_leading(self) -> None:
        if self._deposed is not None:
            raise Deposed(f"coordinator {self.id} stepped down while starting: {self._deposed}")

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
        self.leading = self.stats.leading = False
        log.error("stepping down: %s", reason)
        self._outbox = Changes()
        self._replies = []
        self._early = []
        if self._timer is not None:
            self._timer.cancel()
        subs, self._subs = list(self._subs.values()), {}
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

    def _backlog(self, operation: str) -> tuple[int, int]:
        """Each subject has its own subscription and backlog, so a flood on one (or on the
        admin subjects) never crowds out another: workers' subjects get the full backlog."""
        if ops.BY_NAME[operation].admin:
            return self.settings.backlog_messages // 10, self.settings.backlog_bytes // 4
        return self.settings.backlog_messages, self.settings.backlog_bytes

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
        raise StorageError(
            f"the database kept failing for {self.settings.db_retry_seconds:g}s "
            f"({self._last_error}); stopping so that a restart reloads the truth from it"
        )

    async def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Stop within `timeout` seconds whatever NATS and the database are doing: take no more
        requests, commit and send what is owed, then let go of NATS and the database.

        True when everything owed was committed; False when the database did not answer in
        time (or had failed) and uncommitted changes were abandoned. Nothing they held was ever
        announced, so a restart that reloads the last commit is consistent. Idempotent.
        """
        if self._stopped is not None:
            return self._stopped
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._log_drops()
        if self._timer is not None:
            self._timer.cancel()
        if self._stream_setup is not None:
            self._stream_setup.cancel()
        self.leadership.release()
        await _bounded(self._stop_intake(), 0.5, "unsubscribing")
        committed = await self._finish(max(0.5, deadline - time.monotonic() - 3.0))
        await self._close_nats(deadline)
        if self.metrics is not None:
            await _bounded(self.metrics.stop(), 0.5, "stopping the metrics endpoint")
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        if self._store_thread is not None:
            left = max(0.2, deadline - time.monotonic())
            await _bounded(self._store_thread.run(self.store.close), left, "closing the database")
            self._store_thread.stop()
        self._stopped = committed
        return committed

    async def _stop_intake(self) -> None:
        """Unsubscribe: requests not yet read are left to NATS; their senders retry."""
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _finish(self, seconds: float) -> bool:
        """Let the flusher commit and send what the outbox holds, for at most `seconds`."""
        if self._early:
            await self._publish_early()
        if self._failed.is_set():
            return False
        if self._outbox or self._replies:
            self._kick()
        flusher = self._flusher
        if flusher is None or flusher.done():
            return True
        done, _ = await asyncio.wait({flusher}, timeout=seconds)
        if done and not self._failed.is_set():
            return True
        flusher.cancel()
        pending = self._inflight or self._outbox
        log.error(
            "stopping with %d lease and %d limit changes not committed: the database did not "
            "answer within %.1fs (%s). None of them was announced; a restart reloads the last "
            "commit",
            len(pending.leases_added) + len(pending.leases_removed),
            len(pending.limits),
            seconds,
            self._last_error or "no error: a commit had not returned",
        )
        return False

    async def _close_nats(self, deadline: float) -> None:
        """Push out what was sent if NATS is there, then close, never waiting on a dead
        server: a connection that is reconnecting is closed without a flush."""
        nc = self.nc
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            left = min(1.0, deadline - time.monotonic() - 1.0)
            if left > 0:
                await _bounded(nc.flush(timeout=1), left, "flushing to NATS")
        left = max(0.2, min(1.5, deadline - time.monotonic()))
        await _bounded(nc.close(), left, "closing the NATS connection")

    def uncommitted(self) -> bool:
        """Whether changes wait for a commit (read from any thread: a stop's watchdog)."""
        return self._inflight is not None or self._outbox.durable

    # --- messages ---------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        if not self.leading:  # stepped down (or never led): the sender retries the new leader
            return
        if not msg.reply:  # nobody to answer: a request without a reply subject is not served
            self.unanswerable += 1
            self.stats.rejected[msg.subject[len(self.settings.prefix) + 1 :], "no_reply"] += 1
            return
        operation, actor = self._route(msg.subject)
        payload, at_once = self._step(operation, msg.data, msg.reply, actor)
        if at_once:
            self._early.append((msg.reply, payload))
        else:
            self._replies.append((msg.reply, payload))
        self._kick()
        self._reschedule()
        self._handled += 1
        sub = self._subs.get(msg.subject) or self._subs.get(self.subjects.op("*"))
        if self._early and not (sub is not None and sub.pending_msgs):
            await self._route_early()
        if self._handled >= YIELD_EVERY and sub is not None and sub.pending_msgs:
            # A run of messages without a pause, and more queued: let the socket reader and the
            # other subjects have a turn. Without it a backlog was handled in one go, NATS's
            # socket went unread, and the server cut the coordinator off as a slow consumer.
            # Not after every message: the flusher would run in between and commit one step at
            # a time (coordinator CPU per acquire+release nearly doubled at 32 clients).
            self._handled = 0
            await asyncio.sleep(0)

    async def _route_early(self) -> None:
        """After the last queued message: replies that need no commit go now, or with the
        commit in flight (bounded by EARLY_REPLY_WAIT) if there is one."""
        flushing = self._flusher is not None and not self._flusher.done()
        if flushing and (self._inflight is not None or self._reveals()):
            if self._early_timer is None:
                self._early_timer = asyncio.get_running_loop().call_later(
                    EARLY_REPLY_WAIT, self._early_overdue
                )
            return
        await self._publish_early()

    def _early_overdue(self) -> None:
        self._early_timer = None
        if self._early:
            asyncio.get_running_loop().create_task(self._publish_early())

    async def _publish_early(self) -> None:
        if self._early_timer is not None:
            self._early_timer.cancel()
            self._early_timer = None
        early, self._early = self._early, []
        if self.nc is not None:
            for subject, data in early:
                await _publish(self.nc, subject, data)

    def _route(self, subject: str) -> tuple[str, str | None]:
        """The operation, and for `{prefix}.admin.{op}.{user}` the user NATS let send it."""
        operation = subject[len(self.settings.prefix) + 1 :]
        if operation in self._handlers:
            return operation, None
        operation, _, actor = operation.rpartition(".")
        return operation, actor

    def _step(
        self, operation: str, data: bytes, reply_to: str, actor: str | None = None
    ) -> tuple[bytes, bool]:
        """Run one request through the engine: the reply, and whether it may leave at once
        (before the commit). Every failure becomes an error reply."""
        at_once = operation in _REVEAL_NOTHING
        refused = self._refuse_unread(operation, data)
        if refused is not None:
            return refused, at_once
        try:
            if operation not in self._handlers:  # `{prefix}.*` also catches unknown subjects
                raise Refusal("invalid_request", f"no operation {operation[:60]!r} on this prefix")
            request_type, handler = self._handlers[operation]
            request = _parse(request_type, data)
            if isinstance(request, AcquireRequest):
                _check_notify(request.notify, reply_to)
            if operation in _LEASE_STEPS:
                return self._lease_step(operation, request, handler)
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
                ), at_once
            return reply, at_once
        except Refusal as refusal:
            return _error(refusal.code, refusal.message, refusal.field), at_once
        except Exception:
            log.exception("internal error handling %s", operation)
            return _error("internal", "the coordinator failed on this request; see its log"), (
                at_once
            )
        finally:
            self._absorb(self.engine.take_changes())

    def _refuse_unread(self, operation: str, data: bytes) -> bytes | None:
        """Cheap refusals before any parsing: a flood of junk costs a length check each."""
        try:
            self._check_size(data)
        except Refusal as refusal:
            self.stats.rejected[operation, "too_large"] += 1
            return _error(refusal.code, refusal.message, refusal.field)
        head = data[:64].lstrip()
        if head and head[:1] != b"{":
            self.stats.rejected[operation, "not_an_object"] += 1
            return _NOT_AN_OBJECT
        return None

    def _lease_step(self, operation: str, request: Any, handler: Handler) -> tuple[bytes, bool]:
        """Renew or release: answered from memory at once, unless the lease's own grant is
        not committed yet (then the reply waits for it), or the store is unhealthy (then the
        step is still applied in memory, but not confirmed: `unavailable`)."""
        waits = self._grant_uncommitted(request.lease_id)
        reply = _ok(handler(request))
        if waits:
            return reply, False
        if self._uncommitted_for() <= self.settings.store_stall_seconds:
            return reply, True  # healthy (as store_health says, without building its answer)
        health = self.store_health()
        if operation == ops.RENEW.name:
            message = (
                f"renewal not confirmed: the coordinator cannot commit to its database "
                f"({health.problem}). Keep renewing: the lease stays held meanwhile, and a "
                "restarted coordinator restores it"
            )
        else:
            message = (
                f"release not confirmed: the coordinator cannot commit to its database "
                f"({health.problem}). It is applied in memory; should the coordinator restart "
                "before it commits, the lease comes back and expires after its ttl"
            )
        return _error("unavailable", message), True

    def _grant_uncommitted(self, lease_id: str) -> bool:
        if lease_id in self._outbox.leases_added:
            return True
        return self._inflight is not None and lease_id in self._inflight.leases_added

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

    # --- NATS connection --------------------------------------------------------------------

    async def _on_nats_error(self, error: Exception) -> None:
        if isinstance(error, SlowConsumerError):  # a subject's backlog is full: dropped
            operation = (error.subject or "")[len(self.settings.prefix) + 1 :] or "?"
            self._dropped(operation)
            return
        log.debug("nats: %s", error)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            self.stats.nats_disconnects += 1
            log.warning("lost the NATS connection to %s; reconnecting", self.settings.nats_url)

    async def _on_reconnected(self) -> None:
        log.warning("reconnected to NATS at %s", self.settings.nats_url)

    def _dropped(self, operation: str) -> None:
        """Count a dropped message; warn at once, then at most every DROP_LOG_SECONDS."""
        self.stats.dropped[operation] += 1
        self._drops_unlogged[operation] += 1
        wait = self._drops_logged_at + DROP_LOG_SECONDS - time.monotonic()
        if wait <= 0:
            self._log_drops()
        elif self._drop_timer is None:
            self._drop_timer = asyncio.get_running_loop().call_later(wait, self._log_drops)

    def _log_drops(self) -> None:
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._drop_timer = None
        if not self._drops_unlogged:
            return
        counts = ", ".join(
            f"{count:,} on {self.subjects.op(op)}" for op, count in self._drops_unlogged.items()
        )
        log.warning(
            "dropped %s unread: the backlog was full (a flood, or a burst above "
            "GCL_BACKLOG_MESSAGES / GCL_BACKLOG_BYTES); senders time out and retry",
            counts,
        )
        self._drops_unlogged.clear()
        self._drops_logged_at = time.monotonic()

    # --- outbox -----------------------------------------------------------------------------

    def _absorb(self, changes: Changes) -> None:
        """Add a step's changes to the outbox, noting when it first held something to commit."""
        if changes.durable and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._outbox.merge(changes)

    def _kick(self) -> None:
        """Make sure the one flusher runs: it alone sends, so messages leave in order."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        elif self._reveal is not None and not self._reveal.done() and self._reveals():
            self._reveal.set_result(None)

    def _reveals(self) -> bool:
        """Whether what waits to be committed has someone waiting on it: a reply, a notice, a
        grant (else it is releases, renewals, their limits' snapshots and events, which may
        wait a little: nobody is told anything that depends on them)."""
        outbox = self._outbox
        return bool(
            self._replies
            or outbox.notices
            or outbox.leases_added
            or self._stopping
            or not self.leading
        )

    def _take_replies(self) -> list[tuple[str, bytes]]:
        replies, self._replies = self._replies, []
        return replies

    async def _flush(self) -> None:
        while self._outbox or self._replies:
            if not self._reveals():
                await self._hold_quiet()
            batch, replies = self._outbox, self._take_replies()
            self._outbox = Changes()
            batch.freeze()
            if batch.durable:
                self._inflight, self._inflight_since = batch, self._dirty_since
                self._dirty_since = None
                committed = await self._commit(batch)
                self._inflight, self._inflight_since = None, None
                if not committed:
                    self._failed.set()
                    return
            await self._send(batch, replies)

    async def _hold_quiet(self) -> None:
        """Wait up to QUIET_COMMIT_DELAY for something that reveals (a plain future and one
        timer: `wait_for` on an Event made a task per wait, per release at one client)."""
        loop = asyncio.get_running_loop()
        self._reveal = woken = loop.create_future()
        timer = loop.call_later(QUIET_COMMIT_DELAY, _settle, woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._reveal = None

    async def _commit(self, batch: Changes) -> bool:
        """Commit on the store thread, retrying with back-off for db_retry_seconds."""
        assert self._store_thread is not None
        started = time.monotonic()
        deadline = started + self.settings.db_retry_seconds
        self._watch_stall()
        delay = 0.05
        try:
            while True:
                attempt = self._store_thread.run(self.store.apply, batch)
                left = max(0.0, deadline - time.monotonic())
                # Awaited directly under one timer: a deadline or the flusher's cancellation
                # cancels `attempt`, and the thread's late result is then dropped.
                with contextlib.suppress(Exception):  # TimeoutError included: judged below
                    async with asyncio.timeout(left):
                        await attempt
                if attempt.cancelled():
                    # It never returned (a lock held past the deadline, a connection cut
                    # without a reset, a hung disk): give up as for failures; the store thread
                    # is a daemon and cannot hold the process's exit.
                    self._last_error = self._last_error or (
                        "a commit did not return: the database is locked or slow"
                    )
                    log.critical(
                        "the database has not committed for %.0fs (%s); giving up",
                        self.settings.db_retry_seconds,
                        self._last_error,
                    )
                    return False
                try:
                    attempt.result()
                except Deposed as exc:  # another coordinator leads: never retry, stop serving
                    self._step_down(str(exc))
                    return False
                except Exception as exc:
                    self.stats.commit_failures += 1
                    self._last_error = _first_line(exc)
                    if time.monotonic() > deadline:
                        log.critical(
                            "commit failed for %.0fs (%s); giving up",
                            self.settings.db_retry_seconds,
                            self._last_error,
                        )
                        return False
                    log.warning("commit failed (%s); retrying in %.2fs", self._last_error, delay)
                    log.debug("commit failure", exc_info=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                took = time.monotonic() - started
                self.stats.observe_commit(took)
                if self._stall_reported:
                    log.warning(
                        "the database is committing again: the oldest change waited %.1fs",
                        time.monotonic() - (self._inflight_since or started),
                    )
                elif took >= SLOW_COMMIT_SECONDS:
                    log.warning("a commit took %.1fs: the database was locked or slow", took)
                self._stall_reported = False
                self._last_error = None
                return True
        finally:
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

    # --- the store's health -----------------------------------------------------------------

    def store_health(self) -> StoreHealth:
        """Unhealthy once the oldest uncommitted change has waited over store_stall_seconds,
        whether its commit is failing or has simply not returned (a lock, a slow disk)."""
        waited = self._uncommitted_for()
        if waited <= self.settings.store_stall_seconds:
            return StoreHealth(healthy=True, uncommitted_seconds=waited)
        if self._last_error is not None:
            problem = f"commits are failing ({self._last_error})"
        else:
            problem = "a commit has not returned (the database is locked or slow)"
        problem += f"; the oldest uncommitted change has waited {waited:.1f}s"
        return StoreHealth(healthy=False, uncommitted_seconds=waited, problem=problem)

    def _uncommitted_for(self) -> float:
        """How long the oldest change not yet committed has waited (0: all committed)."""
        since = self._inflight_since if self._inflight_since is not None else self._dirty_since
        return time.monotonic() - since if since is not None else 0.0

    def _watch_stall(self) -> None:
        """Log once when the batch being committed passes store_stall_seconds."""
        since = self._inflight_since if self._inflight_since is not None else time.monotonic()
        delay = max(0.0, since + self.settings.store_stall_seconds - time.monotonic())
        self._stall_timer = asyncio.get_running_loop().call_later(delay, self._on_stall)

    def _on_stall(self) -> None:
        self._stall_timer = None
        health = self.store_health()
        if health.healthy or self._stall_reported:
            return
        self._stall_reported = True
        log.warning(
            "the database is unhealthy: %s. Until a commit lands, nothing that needs one is "
            "sent, renew and release answer 'unavailable', and ping reports it",
            health.problem,
        )

    async def _send(self, batch: Changes, replies: list[tuple[str, bytes]]) -> None:
        """Replies first, then notices to waiters, then events: in causal order."""
        nc = self.nc
        if nc is None:
            return
        if self._stopping and not nc.is_connected:
            count = len(replies) + len(batch.notices) + len(batch.events)
            log.info("stopping while NATS is away: %d replies, notices and events unsent", count)
            return
        await self._publish_early()  # answered before these: sent before them
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
        self._absorb(self.engine.take_changes())
        self._kick()
        self._reschedule()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _first_line(exc: BaseException) -> str:
    """An exception as one short line for logs and health replies."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


async def _bounded(awaitable: Any, seconds: float, what: str) -> bool:
    """Await for at most `seconds`; then cancel it and go on without waiting for it to end (a
    task that ignores cancellation must not hold up a stop). True when it finished cleanly."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("%s did not finish within %.1fs; going on without it", what, seconds)
        return False
    if task.cancelled():
        return False
    error = task.exception()
    if error is not None:
        log.debug("%s failed: %s", what, error)
        return False
    return True


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


_NOT_AN_OBJECT = (
    Reply(
        ok=False,
        error=ErrorBody(code="invalid_request", message="the payload is not a JSON object"),
    )
    .model_dump_json()
    .encode()
)


def _ok(result: BaseModel) -> bytes:
    """The reply envelope around a result, serialised once (not dumped, re-validated, dumped)."""
    return b'{"v":%d,"ok":true,"result":%s}' % (PROTOCOL_VERSION, result.model_dump_json().encode())


def _error(code: str, message: str, field: str | None = None) -> bytes:
    body = ErrorBody(code=code, message=message, field=field)
    return Reply(ok=False, error=body).model_dump_json().encode()
