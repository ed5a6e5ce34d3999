"""Where the dashboard's data comes from: a protocol, and the real one over NATS.

The app talks only to a `DataSource`, so snapshot tests and the README screenshot can feed it
fixed data (`tests.support.fixed_source.FixedSource`) through the very same code paths as a
live coordinator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from nats.aio.client import Client as NATS

from gcl.protocol import Deleted, Event, LimitDetail, LimitInfo, Revoked
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.events import events
from gcl.sdk.exceptions import CoordinatorUnavailable, GCLError
from gcl.sdk.settings import NatsSettings
from gcl.sdk.transport import connect
from gcl.tui.validation import LimitSpec

LinkCallback = Callable[[bool], None]


class DataSource(Protocol):
    """Reads, writes and a live event stream; `open` before use, `close` after."""

    @property
    def label(self) -> str: ...

    @property
    def link_up(self) -> bool: ...

    async def open(self, on_link: LinkCallback) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> str: ...

    async def list_limits(self) -> list[LimitInfo]: ...

    async def get_limit(self, name: str) -> LimitDetail: ...

    def events(self) -> AsyncIterator[Event]: ...

    async def create_limit(self, spec: LimitSpec) -> LimitInfo: ...

    async def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
    ) -> LimitInfo: ...

    async def delete_limit(self, name: str) -> Deleted: ...

    async def revoke_lease(self, lease_id: str) -> Revoked: ...


class NatsSource:
    """A live coordinator: one NATS connection shared by admin calls and the event stream."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._nc: NATS | None = None
        self._admin: AsyncAdminClient | None = None

    @property
    def label(self) -> str:
        return self.settings.nats_url

    @property
    def link_up(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def open(self, on_link: LinkCallback) -> None:
        """Connect (fails fast if NATS is not there); afterwards ride out outages, reporting."""

        async def disconnected() -> None:
            on_link(False)

        async def reconnected() -> None:
            on_link(True)

        self._nc = await connect(
            self.settings,
            "gcl-dashboard",
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )
        self._admin = AsyncAdminClient(self.settings, nc=self._nc)

    async def close(self) -> None:
        nc, self._nc, self._admin = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    def admin(self) -> AsyncAdminClient:
        if self._admin is None:
            raise CoordinatorUnavailable(
                f"not connected to NATS at {self.settings.nats_url} yet: wait for the "
                "indicator to turn green, or check that `gcl up` is running"
            )
        return self._admin

    async def ping(self) -> str:
        """Who serves, for the status bar: the leader, its epoch and how many stand by."""
        admin = self.admin()
        pong = await admin.ping()
        try:
            found = await admin.status(window=0.2)
        except GCLError:
            found = []
        leader = next((s for s in found if s.role == "leader"), None)
        if leader is None:
            return pong.coordinator_id
        standbys = sum(1 for s in found if s.role == "standby")
        text = f"{leader.coordinator_id} leads (epoch {leader.epoch})"
        if standbys:
            text += f", {standbys} standing by"
        return text

    async def list_limits(self) -> list[LimitInfo]:
        return await self.admin().list_limits()

    async def get_limit(self, name: str) -> LimitDetail:
        return await self.admin().get_limit(name)

    def events(self) -> AsyncIterator[Event]:
        self.admin()
        return events(settings=self.settings, nc=self._nc)

    async def create_limit(self, spec: LimitSpec) -> LimitInfo:
        return await self.admin().create_limit(
            spec.name,
            spec.limit,
            active=spec.active,
            slot_decay_per_second=spec.slot_decay_per_second,
        )

    async def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
    ) -> LimitInfo:
        return await self.admin().update_limit(
            name, limit=limit, active=active, slot_decay_per_second=slot_decay_per_second
        )

    async def delete_limit(self, name: str) -> Deleted:
        return await self.admin().delete_limit(name)

    async def revoke_lease(self, lease_id: str) -> Revoked:
        return await self.admin().revoke_lease(lease_id)
