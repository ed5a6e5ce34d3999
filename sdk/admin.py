"""Admin client: create, read, change and delete limits; list and revoke leases.

`AsyncAdminClient` does the work; `AdminClient` is its sync face for scripts and the CLI.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS
from pydantic import ValidationError

from sdk.exceptions import InvalidRequest
from sdk.loop_thread import LoopThread
from sdk.protocol import (
    Deleted,
    LeaseInfo,
    LeaseList,
    LeaseListRequest,
    LeaseRef,
    LimitCreate,
    LimitDetail,
    LimitInfo,
    LimitList,
    LimitListRequest,
    LimitRef,
    LimitUpdate,
    Message,
    Pong,
    Revoked,
)
from sdk.settings import NatsSettings
from sdk.transport import Rpc, connect


class AsyncAdminClient:
    def __init__(self, settings: NatsSettings | None = None, *, nc: NATS | None = None) -> None:
        self.settings = settings or NatsSettings()
        self._nc = nc
        self._owns_nc = nc is None
        self._rpc: Rpc | None = None

    async def __aenter__(self) -> AsyncAdminClient:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._nc is not None and self._owns_nc and not self._nc.is_closed:
            await self._nc.close()
        self._rpc = None

    async def _ready(self) -> Rpc:
        if self._rpc is None:
            if self._nc is None:
                self._nc = await connect(self.settings, "gcl-admin")
            self._rpc = Rpc(self._nc, self.settings)
        return self._rpc

    async def ping(self) -> Pong:
        """Who is serving: raises CoordinatorUnavailable when nobody is."""
        return await (await self._ready()).call("admin.ping", Message(), Pong)

    async def create_limit(
        self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0
    ) -> LimitInfo:
        request = _build(
            LimitCreate,
            name=name,
            limit=limit,
            active=active,
            slot_decay_per_second=slot_decay_per_second,
        )
        return await (await self._ready()).call("admin.limit.create", request, LimitInfo)

    async def get_limit(self, name: str) -> LimitDetail:
        """The limit's figures, its holders and its queue in order."""
        request = _build(LimitRef, name=name)
        return await (await self._ready()).call("admin.limit.get", request, LimitDetail)

    async def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        request = _build(LimitListRequest, pattern=pattern)
        result = await (await self._ready()).call("admin.limit.list", request, LimitList)
        return result.limits

    async def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
    ) -> LimitInfo:
        request = _build(
            LimitUpdate,
            name=name,
            limit=limit,
            active=active,
            slot_decay_per_second=slot_decay_per_second,
        )
        return await (await self._ready()).call("admin.limit.update", request, LimitInfo)

    async def delete_limit(self, name: str) -> Deleted:
        """Delete; holders lose their leases (their SDK raises LeaseLost at block exit)."""
        request = _build(LimitRef, name=name)
        return await (await self._ready()).call("admin.limit.delete", request, Deleted)

    async def list_leases(self, name: str | None = None) -> list[LeaseInfo]:
        request = _build(LeaseListRequest, name=name)
        result = await (await self._ready()).call("admin.lease.list", request, LeaseList)
        return result.leases

    async def revoke_lease(self, lease_id: str) -> Revoked:
        request = _build(LeaseRef, lease_id=lease_id)
        return await (await self._ready()).call("admin.lease.revoke", request, Revoked)


class AdminClient:
    """The sync face of `AsyncAdminClient`."""

    def __init__(self, settings: NatsSettings | None = None) -> None:
        self._thread = LoopThread("gcl-admin")
        self._async = AsyncAdminClient(settings)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._thread.run(self._async.aclose(), timeout=5)
        finally:
            self._thread.stop()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._async, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._thread.run(method(*args, **kwargs))

        call.__doc__ = method.__doc__
        return call


def _build(model: type[Message], **fields: Any) -> Any:
    """Validate locally so a bad name fails before the network, with the field named."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = f"{field}: {first['msg']}" if field else first["msg"]
        raise InvalidRequest(message, field=field) from None
