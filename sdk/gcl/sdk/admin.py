"""Admin client: create, read, change and delete limits; list and revoke leases.

`AsyncAdminClient` does the work; `AdminClient` is its sync face for scripts and the CLI.
Listings come from the coordinator in pages: `list_limits`, `list_leases` and `get_limit` follow
the cursors to the end and return everything; the `*_page` methods return one page and the
cursor for the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from pydantic import ValidationError

from gcl.protocol import (
    DEFAULT_PAGE,
    LEASE_LIST,
    LEASE_REVOKE,
    LIMIT_CREATE,
    LIMIT_DELETE,
    LIMIT_GET,
    LIMIT_LIST,
    LIMIT_UPDATE,
    PING,
    STATUS,
    CoordinatorStatus,
    Deleted,
    LeaseInfo,
    LeaseList,
    LeaseListRequest,
    LeaseRef,
    LimitCreate,
    LimitDetail,
    LimitGetRequest,
    LimitInfo,
    LimitList,
    LimitListRequest,
    LimitRef,
    LimitUpdate,
    Message,
    Pong,
    Revoked,
)
from gcl.sdk.exceptions import GCLError, InvalidRequest
from gcl.sdk.loop_thread import LoopThread
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import Rpc, connect

FOLLOW_PAGE = 1_000  # items per page when following a listing to its end
MAX_PAGES = 100_000  # a bound on any listing: far beyond what the coordinator's caps allow
Page = TypeVar("Page", LimitList, LeaseList, LimitDetail)


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

    async def status(self, window: float = 0.5) -> list[CoordinatorStatus]:
        """Every coordinator on this prefix, leader first, then standbys (by since)."""
        found = await (await self._ready()).gather(STATUS, Message(), window)
        return sorted(found, key=lambda s: (s.role != "leader", s.since))

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
        """The limit's figures, all its holders and its whole queue in order (every page)."""
        pages = await _follow(lambda cursor: self.get_limit_page(name, FOLLOW_PAGE, cursor))
        return pages[-1].model_copy(
            update={
                "holders": [h for page in pages for h in page.holders],
                "waiters": [w for page in pages for w in page.waiters],
                "next_cursor": None,
            }
        )

    async def get_limit_page(
        self, name: str, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LimitDetail:
        """The limit's figures and one page of holders, then waiters (`limit` in all)."""
        request = _build(LimitGetRequest, name=name, limit=limit, cursor=cursor)
        return await (await self._ready()).call(LIMIT_GET, request)

    async def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        """Every limit (matching `pattern`), sorted by name."""
        pages = await _follow(lambda c: self.list_limits_page(pattern, FOLLOW_PAGE, c))
        return [info for page in pages for info in page.limits]

    async def list_limits_page(
        self, pattern: str | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LimitList:
        """One page of limits sorted by name; pass its `next_cursor` back for the next."""
        request = _build(LimitListRequest, pattern=pattern, limit=limit, cursor=cursor)
        return await (await self._ready()).call(LIMIT_LIST, request)

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
        """Every live lease (on limit `name`), oldest first."""
        pages = await _follow(lambda c: self.list_leases_page(name, FOLLOW_PAGE, c))
        return [lease for page in pages for lease in page.leases]

    async def list_leases_page(
        self, name: str | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LeaseList:
        """One page of live leases, oldest first; pass its `next_cursor` back for the next."""
        request = _build(LeaseListRequest, name=name, limit=limit, cursor=cursor)
        return await (await self._ready()).call(LEASE_LIST, request)

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

    def status(self, window: float = 0.5) -> list[CoordinatorStatus]:
        """Every coordinator on this prefix, leader first, then standbys (by since)."""
        return self._thread.run(self._async.status(window))

    def create_limit(
        self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0
    ) -> LimitInfo:
        return self._thread.run(
            self._async.create_limit(
                name, limit, active=active, slot_decay_per_second=slot_decay_per_second
            )
        )

    def get_limit(self, name: str) -> LimitDetail:
        """The limit's figures, all its holders and its whole queue in order (every page)."""
        return self._thread.run(self._async.get_limit(name))

    def get_limit_page(
        self, name: str, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LimitDetail:
        """The limit's figures and one page of holders, then waiters (`limit` in all)."""
        return self._thread.run(self._async.get_limit_page(name, limit, cursor))

    def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        """Every limit (matching `pattern`), sorted by name."""
        return self._thread.run(self._async.list_limits(pattern))

    def list_limits_page(
        self, pattern: str | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LimitList:
        """One page of limits sorted by name; pass its `next_cursor` back for the next."""
        return self._thread.run(self._async.list_limits_page(pattern, limit, cursor))

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
        """Every live lease (on limit `name`), oldest first."""
        return self._thread.run(self._async.list_leases(name))

    def list_leases_page(
        self, name: str | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> LeaseList:
        """One page of live leases, oldest first; pass its `next_cursor` back for the next."""
        return self._thread.run(self._async.list_leases_page(name, limit, cursor))

    def revoke_lease(self, lease_id: str) -> Revoked:
        return self._thread.run(self._async.revoke_lease(lease_id))


async def _follow(fetch: Callable[[str | None], Awaitable[Page]]) -> list[Page]:
    """Every page of a listing, following `next_cursor` until it is None (bounded)."""
    pages = [await fetch(None)]
    for _ in range(MAX_PAGES):
        cursor = pages[-1].next_cursor
        if cursor is None:
            return pages
        pages.append(await fetch(cursor))
    raise GCLError(f"a listing went on past {MAX_PAGES:,} pages: the coordinator is misbehaving")


def _build(model: type[Message], **fields: Any) -> Any:
    """Validate locally so a bad name fails before the network, with the field named."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = f"{field}: {first['msg']}" if field else first["msg"]
        raise InvalidRequest(message, field=field) from None
