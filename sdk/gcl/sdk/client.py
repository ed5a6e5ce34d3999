"""Clients that acquire slots: `AsyncClient` does the work, `Client` is its sync face.

Waiting is push, not poll: a queued request is told of its grant on a private inbox the moment
the coordinator admits it. While it waits it sends a keepalive every few seconds, which tells
the coordinator it is still alive and tells the client if the coordinator restarted (then it
simply asks again: requests are idempotent by `request_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gcl.protocol import (
    ACQUIRE,
    MAX_NAMES,
    RELEASE,
    WAIT_KEEPALIVE,
    WAIT_WITHDRAW,
    AcquireRequest,
    AcquireResult,
    LeaseRef,
    Mode,
    RequestRef,
    WaitNotice,
    WaitStatus,
    Withdraw,
)
from gcl.protocol.names import name_problem
from gcl.sdk.exceptions import (
    AcquireTimeout,
    CoordinatorUnavailable,
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
from gcl.sdk.transport import Rpc, connect

log = logging.getLogger("gcl.sdk")
Names = str | Sequence[str]
_warned_missing: set[str] = set()


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
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
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
            notice = WaitNotice.model_validate_json(msg.data)
        except ValueError:
            log.warning("ignored an unreadable notice on %s", msg.subject)
            return
        future = self._waiting.get(notice.request_id)
        if future is not None and not future.done():
            future.set_result(notice)

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
    ) -> AsyncIterator[Lease]:
        """Hold `occupy` slots of every limit in `names` for the block; renewed in the background.

        If the lease is lost while the block runs, `LeaseLost` is raised when it exits; with
        `cancel_on_lost=True` the block is also cancelled at once. No names: nothing to hold,
        the block simply runs (as in Prefect).
        """
        if not _listed(names):
            yield Lease(None, [], [])
            return
        lease = await self.acquire(
            names, occupy, timeout_seconds, strict=strict, lease_ttl=lease_ttl, label=label
        )
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        inside = True

        def cancel_if_inside() -> None:
            if inside and task is not None:  # never cancel what the task does after the block
                task.cancel()

        def on_lost(_: Lease) -> None:
            if cancel_on_lost:
                loop.call_soon_threadsafe(cancel_if_inside)

        renewer = renewer_for(self.settings)
        renewer.track(lease, on_lost)
        try:
            yield lease
        except asyncio.CancelledError:
            if lease.lost and cancel_on_lost and task is not None:
                task.uncancel()
                raise _lost(lease) from None
            raise
        finally:
            inside = False
            renewer.untrack(lease)
            await asyncio.shield(self.release(lease))
        if lease.lost:
            raise _lost(lease)

    async def rate_limit(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        label: str | None = None,
    ) -> None:
        """Take `occupy` slots that drain at the limit's `slot_decay_per_second`: a rate.

        No names: returns at once (as in Prefect)."""
        if _listed(names):
            await self.acquire(
                names, occupy, timeout_seconds, strict=strict, label=label, mode="rate"
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
    ) -> Lease:
        """Block until granted. Prefer `concurrency()`, which also renews and releases."""
        listed = _listed(names)
        _check_input(listed, occupy, timeout_seconds)  # before any network
        rpc = await self._ready()  # first: the request names our inbox for the grant notice
        request = self._request(listed, occupy, timeout_seconds, strict, lease_ttl, label, mode)
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        future: asyncio.Future[WaitNotice] = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = future
        try:
            result = await self._ask(rpc, request, deadline)
            if result.status == "granted":
                return self._granted(request, result.lease, result.missing)
            return await self._wait(rpc, request, future, deadline, result.keepalive_seconds)
        except (AcquireTimeout, asyncio.CancelledError, KeyboardInterrupt) as exc:
            reason = "timeout" if isinstance(exc, AcquireTimeout) else "cancelled"
            await asyncio.shield(self._withdraw(rpc, request.request_id, reason))
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
    ) -> AcquireRequest:
        """The wire request; the model's own checks are the last line of defence."""
        try:
            return AcquireRequest(
                request_id=uuid.uuid4().hex,
                names=names,
                occupy=occupy,
                mode=mode,
                lease_ttl=lease_ttl if lease_ttl is not None else self.settings.lease_ttl,
                wait=timeout_seconds != 0,
                strict=strict,
                holder=holder(label if label is not None else self.label, self.worker_id),
                notify=self._inbox,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def _ask(
        self,
        rpc: Rpc,
        request: AcquireRequest,
        deadline: float | None,
    ) -> AcquireResult:
        """Send the acquire, retrying a silent coordinator for a while (it may be restarting)."""
        give_up = time.monotonic() + self.settings.unavailable_timeout
        if deadline is not None:
            give_up = min(give_up, deadline)
        delay = 0.05
        while True:
            try:
                return await rpc.call(ACQUIRE, request)
            except AcquireTimeout:
                raise AcquireTimeout(
                    f"no free slots on {request.names} (timeout_seconds=0 tries once)"
                ) from None
            except CoordinatorUnavailable:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("coordinator not answering; retrying %s", request.names)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _wait(
        self,
        rpc: Rpc,
        request: AcquireRequest,
        future: asyncio.Future[WaitNotice],
        deadline: float | None,
        keepalive: float,
    ) -> Lease:
        started = time.monotonic()
        log.info("waiting for %s slot(s) on %s", request.occupy, ", ".join(request.names))
        silent_since: float | None = None
        while True:
            wait = keepalive or 2.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise AcquireTimeout(_timeout_message(request, started))
            with contextlib.suppress(TimeoutError):
                notice = await asyncio.wait_for(asyncio.shield(future), wait)
                return self._noticed(request, notice, started)
            status = await self._keepalive(rpc, request)
            if status is None:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > self.settings.unavailable_timeout:
                    raise rpc.unavailable("the coordinator stopped answering while we waited")
                continue
            silent_since = None
            if status.status == "granted":
                return self._granted(request, status.lease, [], started)

    async def _keepalive(self, rpc: Rpc, request: AcquireRequest) -> WaitStatus | None:
        """Say we still wait; re-ask if the coordinator forgot us (it restarted). None: silent."""
        try:
            status = await rpc.call(WAIT_KEEPALIVE, RequestRef(request_id=request.request_id))
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
        return Lease(info, names, missing)

    async def _withdraw(self, rpc: Rpc, request_id: str, reason: str) -> None:
        """Leave the queue, or hand back a grant that raced our giving up."""
        with contextlib.suppress(CoordinatorUnavailable):
            withdraw = Withdraw(request_id=request_id, reason="timeout")
            if reason != "timeout":
                withdraw = Withdraw(request_id=request_id, reason="cancelled")
            await rpc.call(WAIT_WITHDRAW, withdraw)

    async def release(self, lease: Lease) -> None:
        """Give the slots back. Raises LeaseLost if the lease had already ended."""
        if lease.info is None or lease.info.mode != "concurrency":
            return
        rpc = await self._ready()
        try:
            await rpc.call(RELEASE, LeaseRef(lease_id=lease.info.lease_id))
        except LeaseLost as exc:
            lease.mark_lost(str(exc))
        except LeaseNotFound:
            log.warning("lease %s was unknown to the coordinator at release", lease.lease_id)
        except CoordinatorUnavailable as exc:
            log.error(
                "could not release lease %s (%s): its slots free when its ttl of %gs runs out",
                lease.lease_id,
                exc,
                lease.info.ttl,
            )


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
    ) -> Iterator[Lease]:
        """Hold `occupy` slots of every limit in `names` for the block; see AsyncClient."""
        if not _listed(names):
            yield Lease(None, [], [])
            return
        lease = self.acquire(
            names, occupy, timeout_seconds, strict=strict, lease_ttl=lease_ttl, label=label
        )
        renewer = renewer_for(self.settings)
        renewer.track(lease)
        try:
            yield lease
        finally:
            renewer.untrack(lease)
            self._thread.run(self._async.release(lease))
        if lease.lost:
            raise _lost(lease)

    def rate_limit(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: float | None = None,
        *,
        strict: bool = False,
        label: str | None = None,
    ) -> None:
        """Wait for room under the limits' decay rate; see AsyncClient."""
        coro = self._async.rate_limit(names, occupy, timeout_seconds, strict=strict, label=label)
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
    ) -> Lease:
        """Block until granted; see AsyncClient."""
        coro = self._async.acquire(
            names, occupy, timeout_seconds, strict=strict, lease_ttl=lease_ttl, label=label
        )
        return self._thread.run(coro)

    def release(self, lease: Lease) -> None:
        self._thread.run(self._async.release(lease))


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


def _timeout_message(request: AcquireRequest, started: float) -> str:
    return (
        f"waited {time.monotonic() - started:.1f}s for {request.occupy} slot(s) on "
        f"{', '.join(request.names)} without a grant: raise timeout_seconds, or see who "
        f"holds them with `gcl inspect {request.names[0]}`"
    )


def _lost(lease: Lease) -> LeaseLost:
    return LeaseLost(
        f"lease {lease.lease_id} on {lease.names} was lost while the block ran "
        f"({lease.lost_reason}): another holder may have had the slots; renewals failed or an "
        "operator revoked it",
        lease_id=lease.lease_id,
        reason=lease.lost_reason,
    )
