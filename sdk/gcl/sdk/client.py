"""Clients that acquire slots: `AsyncClient` does the work, `Client` is its sync face.

Waiting is push, not poll: a queued request is told of its grant on a private inbox the moment
the coordinator admits it. While it waits it sends a keepalive every few seconds, which tells
the coordinator it is still alive and tells the client if the coordinator restarted (then it
simply asks again: requests are idempotent by `request_id`). After a second of waiting, and
every ten seconds after, it asks the coordinator why it waits and says so (`gcl.sdk.waiting`).

A block's exit does not wait for its release: the release is sent at once, on the same
connection as (so before) this client's next request, and confirmed in the background
(retrying across a failover). `aclose`/`close`, the end of `asyncio.run` and, for the sync
client, interpreter exit flush the releases still unconfirmed.

Loss is pushed too: if a lease ends without its holder asking (revoked, its limit deleted,
expired), the coordinator tells the same inbox at once, and the lease is marked lost (and its
block cancelled, with `cancel_on_lost`) without waiting for the next renewal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import random
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Literal

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import TypeAdapter

from gcl.protocol import (
    ACQUIRE,
    MAX_NAMES,
    PROTOCOL_VERSION,
    RELEASE,
    WAIT_INSPECT,
    WAIT_KEEPALIVE,
    WAIT_WITHDRAW,
    AcquireRequest,
    AcquireResult,
    HeldLease,
    LostNotice,
    Mode,
    Notice,
    RequestRef,
    WaitNotice,
    WaitStatus,
    Withdraw,
)
from gcl.protocol.names import name_problem
from gcl.sdk.exceptions import (
    AcquireTimeout,
    CoordinatorUnavailable,
    GCLError,
    InvalidRequest,
    LeaseLost,
    LeaseNotFound,
    error_from_code,
)
from gcl.sdk.identity import holder
from gcl.sdk.leases import Lease
from gcl.sdk.loop_thread import LoopThread
from gcl.sdk.renewer import renewer_for
from gcl.sdk.settings import ClientSettings
from gcl.sdk.transport import Rpc, connect, decode
from gcl.sdk.waiting import OnWait, Waiting

log = logging.getLogger("gcl.sdk")
RETRY_CAP_SECONDS = 0.25  # between tries of an acquire nobody answers (jittered)
MAX_TEMPLATES = 256  # acquire requests' shapes kept validated, per client
Names = str | Sequence[str]
OnLost = Callable[[Lease], None]
_warned_missing: set[str] = set()
_NOTICE: TypeAdapter[WaitNotice | LostNotice] = TypeAdapter(Notice)


class AsyncClient:
    """Acquire leases from the coordinator. One NATS connection, shared by every call."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        label: str = "",
        worker_id: str | None = None,
        nc: NATS | None = None,
    ) -> None:
        """`label` and `worker_id` (default: WORKER_ID or the host name) tag every lease."""
        self.settings = settings or ClientSettings()
        self.label = label
        self.worker_id = worker_id
        self._nc = nc
        self._owns_nc = nc is None
        self._rpc: Rpc | None = None
        self._inbox: str | None = None
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[WaitNotice]] = {}
        self._leases: weakref.WeakValueDictionary[str, Lease] = weakref.WeakValueDictionary()
        self._lost_hooks: dict[str, OnLost] = {}
        self._lock = asyncio.Lock()
        self._templates: dict[_Shape, _Template] = {}  # acquire requests by shape
        # Releases sent and not yet answered, by reply token in the order sent (so the first
        # is the first to time out); those being retried; the task that times them out.
        self._unconfirmed: dict[str, _Release] = {}
        self._retrying: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self.release_failures = 0  # releases never confirmed (their slots free at their ttl)
        self.late_losses = 0  # leases found lost only by their (background) release

    async def __aenter__(self) -> AsyncClient:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.flush_releases()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._sub = None
        if self._rpc is not None:
            await self._rpc.close()
        if self._nc is not None and self._owns_nc and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # NATS died: nothing left to say goodbye to
                await self._nc.close()
        self._rpc = None

    async def _ready(self) -> Rpc:
        async with self._lock:
            if self._rpc is None:
                if self._nc is None:
                    self._nc = await connect(self.settings, "gcl-client")
                self._inbox = self._nc.new_inbox()
                self._sub = await self._nc.subscribe(self._inbox, cb=self._on_notice)
                self._rpc = Rpc(self._nc, self.settings)
            return self._rpc

    async def _on_notice(self, msg: Msg) -> None:
        try:
            notice = _NOTICE.validate_json(msg.data)
        except ValueError:
            log.warning("ignored an unreadable notice on %s", msg.subject)
            return
        if isinstance(notice, LostNotice):
            self._told_lost(notice)
            return
        future = self._waiting.get(notice.request_id)
        if future is not None and not future.done():
            future.set_result(notice)

    def _told_lost(self, notice: LostNotice) -> None:
        """The coordinator says a lease of ours ended: mark it, log it, fire its block's hook."""
        lease = self._leases.get(notice.lease_id)
        by = f" (by {notice.actor})" if notice.actor else ""
        reason = f"{notice.kind[6:]}: {notice.reason}{by}"
        if lease is None or not lease.mark_lost(reason, notice.actor):
            return  # already released by us, or already known to be lost
        log.error(
            "lease %s on %s was lost: %s. The block no longer owns the slots; LeaseLost is "
            "raised when it exits",
            lease.lease_id,
            lease.names,
            lease.lost_reason,
        )
        hook = self._lost_hooks.get(notice.lease_id)
        if hook is not None:
            hook(lease)

    # --- the public faces -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def concurrency(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        lease_ttl: float | None = None,
        label: str | None = None,
        cancel_on_lost: bool = False,
        on_lost: OnLost | None = None,
        on_wait: OnWait | None = None,
    ) -> AsyncIterator[Lease]:
        """Hold `occupy` slots of every limit in `names` for the block; renewed in the background.

        If the lease is lost while the block runs (the coordinator pushes the news at once;
        renewal is the safety net), `LeaseLost` is raised when it exits; with
        `cancel_on_lost=True` the block is also cancelled at once, and `on_lost(lease)` is
        called on this event loop. `on_wait(waiting)` hears why the acquire waits (see
        `acquire`). No names: nothing to hold, the block simply runs (as in Prefect).
        """
        if not _listed(names):
            yield Lease(None, [], [])
            return
        lease = await self.acquire(
            names,
            occupy,
            timeout_seconds,
            strict=strict,
            lease_ttl=lease_ttl,
            label=label,
            on_wait=on_wait,
        )
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        inside = True

        def cancel_if_inside() -> None:
            if inside and task is not None:  # never cancel what the task does after the block
                task.cancel()

        def lost(_: Lease) -> None:  # from this loop (a notice) or the renewer's thread
            if cancel_on_lost:
                loop.call_soon_threadsafe(cancel_if_inside)
            if on_lost is not None:
                loop.call_soon_threadsafe(on_lost, lease)

        renewer = renewer_for(self.settings)
        renewer.track(lease, lost)
        key = lease.lease_id or ""
        self._lost_hooks[key] = lost
        if lease.lost:  # told before the hook was in place
            lost(lease)
        try:
            yield lease
        except asyncio.CancelledError:
            if lease.lost and cancel_on_lost and task is not None:
                task.uncancel()
                raise _lost(lease) from None
            raise
        finally:
            inside = False
            self._lost_hooks.pop(key, None)
            renewer.untrack(lease)
            await self._release_soon(lease)  # sent (queued before it could suspend), not awaited
        if lease.lost:  # known before the exit: pushed, or a renewal was refused
            raise _lost(lease)

    async def rate_limit(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        label: str | None = None,
        on_wait: OnWait | None = None,
    ) -> None:
        """Take `occupy` slots that drain at the limit's `slot_decay_per_second`: a rate.

        No names: returns at once (as in Prefect)."""
        if _listed(names):
            await self.acquire(
                names,
                occupy,
                timeout_seconds,
                strict=strict,
                label=label,
                mode="rate",
                on_wait=on_wait,
            )

    async def acquire(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        lease_ttl: float | None = None,
        label: str | None = None,
        mode: Mode = "concurrency",
        long_lived: bool = False,
        on_wait: OnWait | None = None,
    ) -> Lease:
        """Block until granted. Prefer `concurrency()`, which also renews and releases.

        While it waits it logs why (after `wait_report_after`, then every `wait_report_every`
        seconds): its place in each queue, who holds the slots and for how long, and a rough
        estimate; `on_wait(waiting)` receives the same facts (`gcl.sdk.waiting.Waiting`), and
        `AcquireTimeout.waiting` the last of them. `long_lived=True` asks for a lease that is
        not renewed, whose `lease_ttl` may exceed a day (see `gcl acquire`).
        """
        listed = _listed(names)
        _check_input(listed, occupy, timeout_seconds)  # before any network
        rpc = await self._ready()  # first: the request names our inbox for the grant notice
        request, payload = self._request(
            listed, occupy, timeout_seconds, strict, lease_ttl, label, mode, long_lived
        )
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        future: asyncio.Future[WaitNotice] = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = future
        try:
            result = await self._ask(rpc, request, payload, deadline)
            if result.status == "granted":
                return self._granted(request, result.lease, result.missing)
            return await self._wait(
                rpc, request, future, deadline, result.keepalive_seconds, on_wait
            )
        except (AcquireTimeout, asyncio.CancelledError, KeyboardInterrupt) as exc:
            reason = "timeout" if isinstance(exc, AcquireTimeout) else "cancelled"
            await asyncio.shield(self._withdraw(rpc, request, reason))
            raise
        finally:
            self._waiting.pop(request.request_id, None)

    def _request(
        self,
        names: list[str],
        occupy: int,
        timeout_seconds: float | None,
        strict: bool,
        lease_ttl: float | None,
        label: str | None,
        mode: Mode,
        long_lived: bool = False,
    ) -> tuple[AcquireRequest, bytes]:
        """The wire request and its JSON, with a fresh id and secret. The rest is validated by
        the model once per shape of request (the model's own checks are the last line of
        defence) and kept as a template."""
        shape = (
            tuple(names),
            occupy,
            mode,
            long_lived,
            lease_ttl if lease_ttl is not None else self.settings.lease_ttl,
            timeout_seconds != 0,
            strict,
            label if label is not None else self.label,
            self.worker_id,
            os.getpid(),  # the holder's pid: a forked child is another holder
            self._inbox,
        )
        template = self._templates.get(shape)
        if template is None:
            template = self._template(shape)
        return template.fill(secrets.token_hex(16), secrets.token_urlsafe(24))

    def _template(self, shape: _Shape) -> _Template:
        names, occupy, mode, long_lived, lease_ttl, wait, strict, label, worker, _, inbox = shape
        try:
            request = AcquireRequest(
                request_id=secrets.token_hex(16),
                secret=secrets.token_urlsafe(24),
                names=list(names),
                occupy=occupy,
                mode=mode,
                long_lived=long_lived,
                lease_ttl=lease_ttl,
                wait=wait,
                strict=strict,
                holder=holder(label, worker),
                notify=inbox,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if len(self._templates) >= MAX_TEMPLATES:
            self._templates.clear()
        template = self._templates[shape] = _Template(request)
        return template

    async def _ask(
        self,
        rpc: Rpc,
        request: AcquireRequest,
        payload: bytes,
        deadline: float | None,
    ) -> AcquireResult:
        """Send the acquire, retrying a silent coordinator for a while (it may be restarting)."""
        give_up = time.monotonic() + self.settings.unavailable_timeout
        if deadline is not None:
            give_up = min(give_up, deadline)
        delay = 0.05
        while True:
            try:
                data = await rpc.raw(ACQUIRE.name, payload, timeout=self.settings.attempt_timeout)
                return decode(data, ACQUIRE.result)
            except AcquireTimeout:
                raise AcquireTimeout(
                    f"no free slots on {request.names} (timeout_seconds=0 tries once)"
                ) from None
            except CoordinatorUnavailable:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("coordinator not answering; retrying %s", request.names)
                # Short and jittered: a failover to a standby takes ~1.5 s, and many workers
                # retrying in step would arrive at the new leader all at once.
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RETRY_CAP_SECONDS)

    async def _wait(
        self,
        rpc: Rpc,
        request: AcquireRequest,
        future: asyncio.Future[WaitNotice],
        deadline: float | None,
        keepalive: float,
        on_wait: OnWait | None = None,
    ) -> Lease:
        started = time.monotonic()
        log.info("waiting for %s slot(s) on %s", request.occupy, ", ".join(request.names))
        every = keepalive or 2.0
        next_keepalive = started + every
        next_report = started + self.settings.wait_report_after
        silent_since: float | None = None
        last: Waiting | None = None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                last = await self._inspect(rpc, request) or last  # the facts as it gives up
                raise AcquireTimeout(_timeout_message(request, started, last), waiting=last)
            until = min(next_keepalive, next_report, math.inf if deadline is None else deadline)
            with contextlib.suppress(TimeoutError):
                notice = await asyncio.wait_for(asyncio.shield(future), max(0.0, until - now))
                return self._noticed(request, notice, started)
            now = time.monotonic()
            if now >= next_report:
                last = await self._report(rpc, request, on_wait) or last
                next_report = time.monotonic() + self.settings.wait_report_every
            if now < next_keepalive:
                continue
            status = await self._keepalive(rpc, request)
            next_keepalive = time.monotonic() + every
            if status is None:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > self.settings.unavailable_timeout:
                    raise rpc.unavailable("the coordinator stopped answering while we waited")
                continue
            silent_since = None
            if status.status == "granted":
                return self._granted(request, status.lease, [], started)

    async def _inspect(self, rpc: Rpc, request: AcquireRequest) -> Waiting | None:
        """Ask the coordinator why this request still waits; None if it cannot say now."""
        ref = RequestRef(request_id=request.request_id, secret=request.secret)
        try:
            detail = await rpc.call(
                WAIT_INSPECT, ref, timeout=min(self.settings.request_timeout, 2)
            )
        except GCLError as exc:  # unreachable, or a NATS role that predates wait.inspect
            log.debug("could not ask why %s waits: %s", request.request_id, exc)
            return None
        return Waiting.from_detail(detail, request.names) if detail.status == "queued" else None

    async def _report(
        self, rpc: Rpc, request: AcquireRequest, on_wait: OnWait | None
    ) -> Waiting | None:
        """Say why we wait: a log line, and the caller's `on_wait` if it gave one."""
        waiting = await self._inspect(rpc, request)
        if waiting is None:
            return None
        log.info("%s", waiting)
        if on_wait is not None:
            try:
                on_wait(waiting)
            except Exception:
                log.exception("the on_wait callback failed (the wait goes on)")
        return waiting

    async def _keepalive(self, rpc: Rpc, request: AcquireRequest) -> WaitStatus | None:
        """Say we still wait; re-ask if the coordinator forgot us (it restarted). None: silent."""
        try:
            ref = RequestRef(request_id=request.request_id, secret=request.secret)
            status = await rpc.call(WAIT_KEEPALIVE, ref)
            if status.status != "unknown":
                return status
            result = await rpc.call(ACQUIRE, request)
        except CoordinatorUnavailable:
            return None
        if result.status == "granted":
            return WaitStatus(status="granted", request_id=request.request_id, lease=result.lease)
        return WaitStatus(status="queued", request_id=request.request_id)

    def _noticed(self, request: AcquireRequest, notice: WaitNotice, started: float) -> Lease:
        if notice.status == "failed":
            raise error_from_code(notice.error_code or "error", notice.error_message or "")
        return self._granted(request, notice.lease, notice.missing, started)

    def _granted(
        self, request: AcquireRequest, info: Any, missing: list[str], started: float | None = None
    ) -> Lease:
        for name in missing:
            if name not in _warned_missing:
                _warned_missing.add(name)
                log.warning(
                    "no limit named %r: not enforced. Create it with `gcl create %s "
                    "--limit N`, or pass strict=True to make this an error",
                    name,
                    name,
                )
        if started is not None:
            log.info(
                "granted %s slot(s) on %s after %.3fs",
                request.occupy,
                ", ".join(request.names),
                time.monotonic() - started,
            )
        names = [n for n in dict.fromkeys(request.names) if n not in missing]
        lease = Lease(info, names, missing, request.secret)
        if info is not None and info.mode == "concurrency":
            self._leases[info.lease_id] = lease  # a pushed LostNotice finds it here
        return lease

    async def _withdraw(self, rpc: Rpc, request: AcquireRequest, reason: str) -> None:
        """Leave the queue, or hand back a grant that raced our giving up."""
        with contextlib.suppress(CoordinatorUnavailable):
            why: Literal["timeout", "cancelled"] = "timeout" if reason == "timeout" else "cancelled"
            withdraw = Withdraw(request_id=request.request_id, secret=request.secret, reason=why)
            await rpc.call(WAIT_WITHDRAW, withdraw)

    async def release(self, lease: Lease) -> None:
        """Give the slots back and wait for the coordinator to confirm it. A lease that had
        already ended is marked lost (`lease.lost`)."""
        release = await self._release_soon(lease)
        if release is not None:
            await asyncio.shield(release.settled())

    async def flush_releases(self, timeout: float = 5.0) -> None:
        """Wait (at most `timeout` seconds) for the releases still unconfirmed."""
        waits: list[asyncio.Future[Any]] = [r.settled() for r in self._unconfirmed.values()]
        waits.extend(self._retrying)
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    async def _release_soon(self, lease: Lease) -> _Release | None:
        """Send the release now and confirm it in the background, with no task of its own:
        its reply is read by a callback, and `_expire` retries it if none comes in time.

        The request is queued on this client's connection before this returns (or could
        suspend), so it reaches the coordinator before any later request of this client (NATS
        keeps a connection's order, and the coordinator handles a release queued before an
        acquire first); sent right before the next acquire, both leave in one write."""
        if lease.info is None or lease.info.mode != "concurrency":
            return None
        rpc = self._rpc or await self._ready()
        deadline = time.monotonic() + self.settings.attempt_timeout
        release = _Release(lease, lease.info.lease_id, deadline, known_lost=lease.lost)
        try:
            payload = _held_json(release.lease_id, lease.secret)
            subject = rpc.subjects.op(RELEASE.name)
            release.token = await rpc.post(subject, payload, partial(self._answered, release))
        except Exception as exc:  # connection closed or reconnecting: the retries take over
            log.debug("release of %s not sent at once: %s", release.lease_id, exc)
            self._retry(rpc, release)
            return release
        self._unconfirmed[release.token] = release
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.ensure_future(self._expire(rpc))
        return release

    def _answered(self, release: _Release, data: bytes) -> None:
        """The reply to a release's first try (empty: NATS found no responder)."""
        if self._unconfirmed.pop(release.token, None) is None:
            return  # timed out meanwhile: its retry decides
        if _confirmed(data, release.lease_id):
            release.settle()
            return
        rpc = self._rpc
        try:
            if not data:
                raise CoordinatorUnavailable("no coordinator is listening")
            result = decode(data, RELEASE.result)
            if not result.released:  # ended already: not by us
                self._lost_late(release, "it was already released when its block ended")
        except LeaseLost as exc:
            self._lost_late(release, str(exc))
        except LeaseNotFound:
            log.warning("lease %s was unknown to the coordinator at release", release.lease_id)
        except CoordinatorUnavailable:
            if rpc is not None:
                self._retry(rpc, release)
                return
        except (GCLError, ValueError) as exc:  # not a confirmed release: assume the worst
            self._lost_late(release, f"its release had an answer that is not one: {exc}")
        release.settle()

    async def _expire(self, rpc: Rpc) -> None:
        """Retry each release left unanswered for `attempt_timeout`, oldest first; ends when
        none is left. The end of `asyncio.run` cancels it: then it makes sure the releases at
        least left on the socket."""
        try:
            while self._unconfirmed:
                oldest = next(iter(self._unconfirmed.values()))
                wait = oldest.deadline - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                del self._unconfirmed[oldest.token]
                rpc.forget(oldest.token)
                self._retry(rpc, oldest)
        except asyncio.CancelledError:
            await _push_out(rpc.nc)
            raise

    def _retry(self, rpc: Rpc, release: _Release) -> None:
        task = asyncio.ensure_future(self._retry_release(rpc, release))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def _retry_release(self, rpc: Rpc, release: _Release) -> None:
        """The first try went unanswered: retry it (idempotent) across a failover."""
        try:
            await self._retry_until_answered(rpc, release)
        finally:
            release.settle()

    async def _retry_until_answered(self, rpc: Rpc, release: _Release) -> None:
        lease = release.lease
        held = HeldLease(lease_id=release.lease_id, secret=lease.secret)
        give_up = time.monotonic() + self.settings.unavailable_timeout
        delay = 0.05
        while True:
            try:
                await rpc.call(RELEASE, held, timeout=self.settings.attempt_timeout)
                return  # a retry: our first try may have landed, so `released` says nothing
            except LeaseLost as exc:
                self._lost_late(release, str(exc))
                return
            except LeaseNotFound:  # our first try landed, or a new leader forgot it
                return
            except CoordinatorUnavailable as exc:
                # The leader may be failing over: the next one has the lease and frees it.
                if time.monotonic() + delay > give_up:
                    self.release_failures += 1
                    log.error(
                        "could not release lease %s (%s): its slots free when its ttl of %gs "
                        "runs out",
                        held.lease_id,
                        exc,
                        lease.info.ttl if lease.info else 0.0,
                    )
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RETRY_CAP_SECONDS)

    def _lost_late(self, release: _Release, reason: str) -> None:
        """The release found the lease already ended. Known at the exit: `LeaseLost` was
        raised there. Learnt only now, after the block returned: a log line and a count."""
        lease = release.lease
        if not lease.mark_lost(reason) or release.known_lost:
            return
        self.late_losses += 1
        log.error(
            "lease %s on %s had been lost before its block ended (%s), found only by its "
            "release after the block returned: another holder may have had the slots",
            lease.lease_id,
            lease.names,
            reason,
        )


_Shape = tuple[
    tuple[str, ...], int, Mode, bool, float, bool, bool, str, str | None, int, str | None
]


class _Template:
    """An acquire request validated once, for every request of its shape: a copy with a new
    id and secret, and its JSON as the model writes it (both are quoted as they are, being
    within the wire's rules: `secrets.token_hex` and `token_urlsafe` characters)."""

    __slots__ = ("head", "middle", "request", "tail")

    def __init__(self, request: AcquireRequest) -> None:
        self.request = request
        text = request.model_dump_json()
        self.head, found, rest = text.partition(f'"{request.request_id}"')
        self.middle, found_too, self.tail = rest.partition(f'"{request.secret}"')
        if not (found and found_too):  # never, as the model writes JSON: still, never guess
            raise InvalidRequest("cannot lay out this request's JSON")

    def fill(self, request_id: str, secret: str) -> tuple[AcquireRequest, bytes]:
        request = self.request.model_copy(update={"request_id": request_id, "secret": secret})
        payload = f'{self.head}"{request_id}"{self.middle}"{secret}"{self.tail}'
        return request, payload.encode()


class _Release:
    """A release sent by a block's exit and not yet settled (confirmed, found lost, or given
    up after its retries)."""

    __slots__ = ("_settled", "deadline", "done", "known_lost", "lease", "lease_id", "token")

    def __init__(self, lease: Lease, lease_id: str, deadline: float, known_lost: bool) -> None:
        self.lease = lease
        self.lease_id = lease_id
        self.deadline = deadline  # monotonic: retried if unanswered by then
        self.known_lost = known_lost  # what the exit saw (and raised)
        self.token = ""  # its reply subject's, once sent
        self.done = False
        self._settled: asyncio.Future[None] | None = None  # made only for who waits

    def settled(self) -> asyncio.Future[None]:
        """Done once the release is settled (made on demand: most are never waited for)."""
        if self._settled is None:
            self._settled = asyncio.get_running_loop().create_future()
            if self.done:
                self._settled.set_result(None)
        return self._settled

    def settle(self) -> None:
        self.done = True
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)


_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")


def _held_json(lease_id: str, secret: str) -> bytes:
    """A release's JSON, as `HeldLease(...).model_dump_json()` writes it, without building and
    validating a model per block: a lease id the coordinator sent and the secret we made are
    checked against the wire's rules first, else the model checks (and refuses) them."""
    if _TOKEN.fullmatch(lease_id) is None or _SECRET.fullmatch(secret) is None:
        return HeldLease(lease_id=lease_id, secret=secret).model_dump_json().encode()
    return f'{{"v":{PROTOCOL_VERSION},"lease_id":"{lease_id}","secret":"{secret}"}}'.encode()


def _confirmed(data: bytes, lease_id: str) -> bool:
    """The reply that plainly says "released", byte for byte as the coordinator writes it: no
    model needed. Anything else (an error, `released: false`, a reply written another way,
    something unreadable) is read in full by `decode`."""
    expected = f'{{"v":{PROTOCOL_VERSION},"ok":true,"result":{{"lease_id":"{lease_id}",'
    return data == f'{expected}"released":true}}}}'.encode()


async def _push_out(nc: NATS) -> None:
    """Write what the connection still holds to its socket, now: at the end of `asyncio.run`
    nats-py's own flusher task is cancelled along with ours."""
    pending = getattr(nc, "_pending", None)
    transport = getattr(nc, "_transport", None)
    if not pending or transport is None or not nc.is_connected:
        return
    with contextlib.suppress(Exception):
        transport.writelines(pending[:])
        nc._pending = []
        nc._pending_data_size = 0
        await asyncio.wait_for(transport.drain(), 1.0)


class Client:
    """The sync face of `AsyncClient`: the same calls, run on a private event-loop thread."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        label: str = "",
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self._thread = LoopThread("gcl-client")
        self._async = AsyncClient(self.settings, label=label, worker_id=worker_id)
        # A script that ends right after a block must not leave its release unsent.
        atexit.register(_flush_at_exit, weakref.ref(self))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._thread.run(self._async.aclose(), timeout=5)
        self._thread.stop()

    @contextlib.contextmanager
    def concurrency(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        lease_ttl: float | None = None,
        label: str | None = None,
        on_wait: OnWait | None = None,
    ) -> Iterator[Lease]:
        """Hold `occupy` slots of every limit in `names` for the block; see AsyncClient.

        A loss pushed by the coordinator marks `lease.lost` at once (the block runs on; it
        raises `LeaseLost` at exit). `on_wait` is called from the client's loop thread."""
        if not _listed(names):
            yield Lease(None, [], [])
            return
        lease = self.acquire(
            names,
            occupy,
            timeout_seconds,
            strict=strict,
            lease_ttl=lease_ttl,
            label=label,
            on_wait=on_wait,
        )
        renewer = renewer_for(self.settings)
        renewer.track(lease)
        try:
            yield lease
        finally:
            renewer.untrack(lease)
            self._thread.run(self._async._release_soon(lease))  # sent, confirmed meanwhile
        if lease.lost:  # known before the exit: pushed, or a renewal was refused
            raise _lost(lease)

    def rate_limit(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        label: str | None = None,
        on_wait: OnWait | None = None,
    ) -> None:
        """Wait for room under the limits' decay rate; see AsyncClient."""
        coro = self._async.rate_limit(
            names, occupy, timeout_seconds, strict=strict, label=label, on_wait=on_wait
        )
        self._thread.run(coro)

    def acquire(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        lease_ttl: float | None = None,
        label: str | None = None,
        long_lived: bool = False,
        on_wait: OnWait | None = None,
    ) -> Lease:
        """Block until granted; see AsyncClient."""
        coro = self._async.acquire(
            names,
            occupy,
            timeout_seconds,
            strict=strict,
            lease_ttl=lease_ttl,
            label=label,
            long_lived=long_lived,
            on_wait=on_wait,
        )
        return self._thread.run(coro)

    def release(self, lease: Lease) -> None:
        self._thread.run(self._async.release(lease))

    def flush_releases(self, timeout: float = 5.0) -> None:
        """Wait (at most `timeout` seconds) for the releases still unconfirmed."""
        if self._thread.loop.is_running():
            self._thread.run(self._async.flush_releases(timeout), timeout=timeout + 1)

    @property
    def release_failures(self) -> int:
        return self._async.release_failures

    @property
    def late_losses(self) -> int:
        return self._async.late_losses


def _flush_at_exit(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        with contextlib.suppress(Exception):
            client.flush_releases()


def _listed(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _check_input(names: list[str], occupy: object, timeout_seconds: object) -> None:
    if not names:
        raise InvalidRequest("names: give at least one limit name", field="names")
    if len(names) > MAX_NAMES:
        raise InvalidRequest(f"names: at most {MAX_NAMES} names per call", field="names")
    for name in names:
        problem = name_problem(name)
        if problem:
            raise InvalidRequest(problem, field="names")
    if isinstance(occupy, bool) or not isinstance(occupy, int) or occupy < 1:
        raise InvalidRequest(f"occupy must be a whole number >= 1 (got {occupy!r})", field="occupy")
    if timeout_seconds is not None and (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not timeout_seconds >= 0
    ):
        raise InvalidRequest(
            f"timeout_seconds must be None or >= 0 (got {timeout_seconds!r})",
            field="timeout_seconds",
        )


def _timeout_message(request: AcquireRequest, started: float, waiting: Waiting | None) -> str:
    facts = f" ({waiting.where()})" if waiting is not None else ""
    return (
        f"waited {time.monotonic() - started:.1f}s for {request.occupy} slot(s) on "
        f"{', '.join(request.names)} without a grant{facts}: wait longer (a larger timeout), "
        f"or see who holds them with `gcl inspect {request.names[0]}`"
    )


def _lost(lease: Lease) -> LeaseLost:
    return LeaseLost(
        f"lease {lease.lease_id} on {lease.names} was lost while the block ran "
        f"({lease.lost_reason}): another holder may have had the slots; renewals failed or an "
        "operator revoked it",
        lease_id=lease.lease_id,
        reason=lease.lost_reason,
        actor=lease.lost_by,
    )
