"""Admin client: create, read, change and delete limits; list and revoke leases.

`AsyncAdminClient` does the work; `AdminClient` is its sync face for scripts and the CLI.
"""

from __future__ import annotations

import contextlib
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import ValidationError

from gcl.protocol import (
    LEASE_LIST,
    LEASE_REVOKE,
    LIMIT_CREATE,
    LIMIT_DELETE,
    LIMIT_GET,
    LIMIT_LIST,
    LIMIT_UPDATE,
    PING,
    Deleted,
    LeaseInfo,
    LeaseListRequest,
    LeaseRef,
    LimitCreate,
    LimitDetail,
    LimitInfo,
    LimitListRequest,
    LimitRef,
    LimitUpdate,
    Message,
    Pong,
    Revoked,
)
from gcl.sdk.exceptions import InvalidRequest
from gcl.sdk.loop_thread import LoopThread
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import Rpc, connect


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
            with contextlib.suppress(Exception):  # NATS died: nothing left to say goodbye to
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
        return await (await self._ready()).call(PING, Message())

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
        return await (await self._ready()).call(LIMIT_CREATE, request)

    async def get_limit(self, name: str) -> LimitDetail:
        """The limit's figures, its holders and its queue in order."""
        request = _build(LimitRef, name=name)
        return await (await self._ready()).call(LIMIT_GET, request)

    async def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        request = _build(LimitListRequest, pattern=pattern)
        result = await (await self._ready()).call(LIMIT_LIST, request)
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
        return await (await self._ready()).call(LIMIT_UPDATE, request)

    async def delete_limit(self, name: str) -> Deleted:
        """Delete; holders lose their leases (their SDK raises LeaseLost at block exit)."""
        request = _build(LimitRef, name=name)
        return await (await self._ready()).call(LIMIT_DELETE, request)

    async def list_leases(self, name: str | None = None) -> list[LeaseInfo]:
        request = _build(LeaseListRequest, name=name)
        result = await (await self._ready()).call(LEASE_LIST, request)
        return result.leases

    async def revoke_lease(self, lease_id: str) -> Revoked:
        request = _build(LeaseRef, lease_id=lease_id)
        return await (await self._ready()).call(LEASE_REVOKE, request)


class AdminClient:
    """The sync face of `AsyncAdminClient`: the same methods, each run on a private loop thread.

    A thin twin (like httpx's Client and AsyncClient): every method is one call into the async
    implementation, so behaviour lives in one place. tests/test_admin_sync.py checks that the
    two keep the same methods and signatures.
    """

    def __init__(self, settings: NatsSettings | None = None) -> None:
        self._thread = LoopThread("gcl-admin")
        self._async = AsyncAdminClient(settings)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect and stop the loop thread (the twin of `aclose`)."""
        try:
            self._thread.run(self._async.aclose(), timeout=5)
        finally:
            self._thread.stop()

    def ping(self) -> Pong:
        """Who is serving: raises CoordinatorUnavailable when nobody is."""
        return self._thread.run(self._async.ping())

    def create_limit(
        self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0
    ) -> LimitInfo:
        return self._thread.run(
            self._async.create_limit(
                name, limit, active=active, slot_decay_per_second=slot_decay_per_second
            )
        )

    def get_limit(self, name: str) -> LimitDetail:
        """The limit's figures, its holders and its queue in order."""
        return self._thread.run(self._async.get_limit(name))

    def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        return self._thread.run(self._async.list_limits(pattern))

    def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
    ) -> LimitInfo:
        return self._thread.run(
            self._async.update_limit(
                name, limit=limit, active=active, slot_decay_per_second=slot_decay_per_second
            )
        )

    def delete_limit(self, name: str) -> Deleted:
        """Delete; holders lose their leases (their SDK raises LeaseLost at block exit)."""
        return self._thread.run(self._async.delete_limit(name))

    def list_leases(self, name: str | None = None) -> list[LeaseInfo]:
        return self._thread.run(self._async.list_leases(name))

    def revoke_lease(self, lease_id: str) -> Revoked:
        return self._thread.run(self._async.revoke_lease(lease_id))


def _build(model: type[Message], **fields: Any) -> Any:
    """Validate locally so a bad name fails before the network, with the field named."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = f"{field}: {first['msg']}" if field else first["msg"]
        raise InvalidRequest(message, field=field) from None
