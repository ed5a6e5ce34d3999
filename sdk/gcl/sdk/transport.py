"""NATS connection and typed request/reply, shared by every client and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import re
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError, create_model

from gcl.protocol import Reply, Subjects
from gcl.protocol.operations import Operation, Req, Res
from gcl.sdk.exceptions import (
    CoordinatorUnavailable,
    GCLError,
    PermissionDenied,
    error_from_code,
)
from gcl.sdk.settings import NatsSettings

log = logging.getLogger("gcl.sdk")
T = TypeVar("T", bound=BaseModel)


_DENIED = re.compile(
    r"permissions violation for (publish|subscription) to \"?([^\"\s']+)", re.IGNORECASE
)
# Requests in flight by subject, per connection: a permission error NATS reports for that
# subject fails the request at once (with `Refused`) instead of at its timeout.
_denials: weakref.WeakKeyDictionary[NATS, dict[str, asyncio.Future[bytes]]] = (
    weakref.WeakKeyDictionary()
)
OnReply = Callable[[bytes], None]


class Refused(Exception):
    """NATS refused to let this connection publish a request's subject."""


class NoReply(Exception):
    """A request's time ran out before its reply came."""


async def connect(settings: NatsSettings, name: str, **overrides: Any) -> NATS:
    """Connect to NATS, reconnecting for ever once connected; fail fast if it is not there."""
    client: NATS | None = None
    refused: list[str] = []

    async def on_error(error: Exception) -> None:
        if "authorization violation" in str(error).lower() and client is None:
            refused.append(str(error))  # our credential was refused while connecting
            return
        denied = _DENIED.search(str(error))
        if denied is None:
            log.debug("nats: %s", error)
            return
        action, subject = denied.groups()
        waiter = _denials.get(client, {}).get(subject) if client is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_exception(Refused(str(error)))  # the request raises PermissionDenied now
            return
        log.error("nats refused to let %s %s to %s", _who(settings), action.lower(), subject)

    options = settings.connect_options()
    options.update(
        name=name,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        error_cb=on_error,
    )
    options.update(overrides)
    try:
        client = await nats.connect(**options)
    except (OSError, NoServersError, NatsTimeout, TimeoutError) as exc:
        if refused:
            raise _refused(settings) from None
        raise CoordinatorUnavailable(
            f"cannot reach NATS at {settings.nats_url} ({exc or type(exc).__name__}): start one "
            "with `gcl up`, or point GCL_NATS_URL at your NATS server"
        ) from exc
    except NatsError as exc:
        if refused or "authorization violation" in str(exc).lower():
            raise _refused(settings) from None
        raise
    _denials[client] = {}
    # Fail fast on the first connect, but once connected ride out any outage.
    client.options["max_reconnect_attempts"] = -1
    return client


class Rpc:
    """Typed request/reply on the coordinator's subjects.

    Replies come back on one wildcard subscription of this Rpc's own (`{inbox}.*`, opened on
    first use), each to the future or callback its reply subject's token names: a request costs
    a publish, a dict entry and a timer, with no task, subscription or extra future of its own.
    """

    def __init__(self, nc: NATS, settings: NatsSettings) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self._root = ""  # replies come to {root}.{token}
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[bytes] | OnReply] = {}
        self._tokens = itertools.count(1)

    async def call(
        self, operation: Operation[Req, Res], request: Req, timeout: float | None = None
    ) -> Res:
        data = await self.raw(self._name(operation), request.model_dump_json().encode(), timeout)
        return decode(data, operation.result)

    def _name(self, operation: Operation[Req, Res]) -> str:
        """The subject suffix: admin operations carry the sender's NATS user, which NATS lets
        a user publish only as itself, so the coordinator learns who asked."""
        if operation.admin and self.settings.identity:
            return f"{operation.name}.{self.settings.identity}"
        return operation.name

    async def gather(
        self, operation: Operation[Req, Res], request: Req, window: float = 0.5
    ) -> list[Res]:
        """Every answer that arrives within `window` (operations that all coordinators answer)."""
        name = self._name(operation)
        inbox = self.nc.new_inbox()
        answers: list[bytes] = []

        async def collect(msg: Msg) -> None:
            if msg.data:  # NATS's "no responders" notice has no body
                answers.append(bytes(msg.data))

        sub = await self.nc.subscribe(inbox, cb=collect)
        try:
            subject = self.subjects.op(name)
            await self.nc.publish(subject, request.model_dump_json().encode(), reply=inbox)
            await asyncio.sleep(window)
        finally:
            await sub.unsubscribe()
        return [decode(data, operation.result) for data in answers]

    async def raw(self, operation: str, payload: bytes, timeout: float | None = None) -> bytes:
        subject = self.subjects.op(operation)
        wait = timeout if timeout is not None else self.settings.request_timeout
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        timer = loop.call_later(wait, _no_reply, reply)
        pending = _denials.get(self.nc)
        if pending is not None:
            pending[subject] = reply
        token = ""
        try:
            token = await self.post(subject, payload, reply)
            data = await reply
        except NoReply:
            raise self.unavailable(f"no reply within {wait:g}s") from None
        except ConnectionClosedError:
            raise self.unavailable("the NATS connection is closed") from None
        except Refused:
            raise PermissionDenied(
                f"NATS does not let {_who(self.settings)} send {subject}: that takes another "
                "gcl role (workers acquire; operators also change limits; observers only "
                "read); use that role's credential"
            ) from None
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
            if pending is not None and pending.get(subject) is reply:
                del pending[subject]
        if not data:  # NATS's "no responders" notice has no body
            raise self.unavailable("no coordinator is listening")
        return data

    async def post(
        self, subject: str, payload: bytes, on_reply: asyncio.Future[bytes] | OnReply
    ) -> str:
        """Publish a request whose reply (empty: nobody listens) goes to `on_reply`; returns
        its token, for `forget`. The message is queued on the connection before this can
        suspend, so it keeps its place in the connection's order even if the caller is
        cancelled meanwhile."""
        root = self._root or await self._open()
        token = str(next(self._tokens))
        self._waiting[token] = on_reply
        try:
            await self.nc.publish(subject, payload, reply=f"{root}.{token}")
        except BaseException:
            self._waiting.pop(token, None)
            raise
        return token

    def forget(self, token: str) -> None:
        """Stop waiting for a reply `post` asked for: it is dropped if it still comes."""
        self._waiting.pop(token, None)

    async def _open(self) -> str:
        """Subscribe to this Rpc's replies. nats-py queues the SUB before it can suspend, so a
        request published after this returns (or while it is under way) finds it in place."""
        root = self._root = self.nc.new_inbox()
        try:
            self._sub = await self.nc.subscribe(f"{root}.*", cb=self._on_reply)
        except BaseException:
            self._root = ""
            raise
        return root

    async def _on_reply(self, msg: Msg) -> None:
        waiter = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if waiter is None:
            return  # timed out, forgotten, or a second answer
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(msg.data)
        else:
            waiter(msg.data)

    async def close(self) -> None:
        """Drop the reply subscription (the connection stays open)."""
        sub, self._sub, self._root = self._sub, None, ""
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def unavailable(self, why: str) -> CoordinatorUnavailable:
        return CoordinatorUnavailable(
            f"{why} on {self.subjects.prefix}.* at {self.settings.nats_url}: start one with "
            "`gcl up` (or `gcl serve` next to your NATS), or check GCL_NATS_URL and GCL_PREFIX"
        )


def _no_reply(reply: asyncio.Future[bytes]) -> None:
    if not reply.done():
        reply.set_exception(NoReply())


def _refused(settings: NatsSettings) -> PermissionDenied:
    return PermissionDenied(
        f"NATS at {settings.nats_url} refused {_who(settings)}: give the credential of a gcl "
        "role (GCL_NATS_CREDENTIALS=<role>.env from `gcl auth init`, or GCL_NATS_USER and "
        "GCL_NATS_PASSWORD), or run from the folder of `gcl up`, which finds its own"
    )


def _who(settings: NatsSettings) -> str:
    user = settings.identity
    return f"user {user!r} (role {settings.nats_role})" if user else "this connection"


def decode(data: bytes, result: type[T]) -> T:
    """Unwrap a reply envelope: the result, or the typed exception for its error code."""
    try:  # the common answer, a result, read in one pass
        reply = _envelope(result).model_validate_json(data)
    except ValidationError:
        pass  # an error, or something malformed: read it step by step to say which
    else:
        if reply.ok and reply.error is None and isinstance(reply.result, result):
            return reply.result
    return _decode_steps(data, result)


@functools.cache
def _envelope(result: type[T]) -> type[Reply]:
    """`Reply` with `result` typed, so a good answer is validated once (not a dict, then the
    result model from that dict)."""
    typed: Any = result | None
    return create_model(f"{result.__name__}Reply", __base__=Reply, result=(typed, None))


def _decode_steps(data: bytes, result: type[T]) -> T:
    try:
        reply = Reply.model_validate_json(data)
    except ValidationError as exc:
        raise GCLError(f"the coordinator sent a reply this client cannot read: {exc}") from exc
    if not reply.ok or reply.error is not None:
        error = reply.error
        if error is None:
            raise GCLError("the coordinator answered not-ok without an error")
        raise error_from_code(error.code, error.message, error.field)
    return result.model_validate(reply.result or {})
