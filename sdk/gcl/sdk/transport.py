"""NATS connection and typed request/reply, shared by every client and the CLI."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from gcl.protocol import Reply, Subjects
from gcl.protocol.operations import Operation, Req, Res
from gcl.sdk.exceptions import CoordinatorUnavailable, GCLError, error_from_code
from gcl.sdk.settings import NatsSettings

log = logging.getLogger("gcl.sdk")
T = TypeVar("T", bound=BaseModel)


async def connect(settings: NatsSettings, name: str, **overrides: Any) -> NATS:
    """Connect to NATS, reconnecting for ever once connected; fail fast if it is not there."""

    async def on_error(error: Exception) -> None:
        log.debug("nats: %s", error)

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
        client: NATS = await nats.connect(**options)
    except (OSError, NoServersError, NatsTimeout, TimeoutError) as exc:
        raise CoordinatorUnavailable(
            f"cannot reach NATS at {settings.nats_url} ({exc or type(exc).__name__}): start one "
            "with `gcl up`, or point GCL_NATS_URL at your NATS server"
        ) from exc
    # Fail fast on the first connect, but once connected ride out any outage.
    client.options["max_reconnect_attempts"] = -1
    return client


class Rpc:
    """Typed request/reply on the coordinator's subjects."""

    def __init__(self, nc: NATS, settings: NatsSettings) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = Subjects(settings.prefix)

    async def call(
        self, operation: Operation[Req, Res], request: Req, timeout: float | None = None
    ) -> Res:
        data = await self.raw(operation.name, request.model_dump_json().encode(), timeout)
        return decode(data, operation.result)

    async def raw(self, operation: str, payload: bytes, timeout: float | None = None) -> bytes:
        subject = self.subjects.op(operation)
        wait = timeout if timeout is not None else self.settings.request_timeout
        try:
            msg = await self.nc.request(subject, payload, timeout=wait)
        except NoRespondersError:
            raise self.unavailable("no coordinator is listening") from None
        except (NatsTimeout, TimeoutError):
            raise self.unavailable(f"no reply within {wait:g}s") from None
        except ConnectionClosedError:
            raise self.unavailable("the NATS connection is closed") from None
        return bytes(msg.data)

    def unavailable(self, why: str) -> CoordinatorUnavailable:
        return CoordinatorUnavailable(
            f"{why} on {self.subjects.prefix}.* at {self.settings.nats_url}: start one with "
            "`gcl up` (or `gcl serve` next to your NATS), or check GCL_NATS_URL and GCL_PREFIX"
        )


def decode(data: bytes, result: type[T]) -> T:
    """Unwrap a reply envelope: the result, or the typed exception for its error code."""
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
