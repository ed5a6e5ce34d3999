"""A data source over fixed, in-memory data: for snapshot tests and the README screenshot.

It behaves like a coordinator that never changes by itself: mutations edit the data and
publish the matching event, so the UI paths are the live ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gcl.protocol import Deleted, Event, LimitDetail, LimitInfo, Revoked
from gcl.sdk.exceptions import LeaseNotFound, LimitExists, LimitNotFound
from gcl.tui.source import LinkCallback
from gcl.tui.validation import LimitSpec


class FixedSource:
    def __init__(
        self,
        details: list[LimitDetail],
        events: list[Event] | None = None,
        *,
        now: float = 0.0,
        coordinator_id: str = "fixed",
        label: str = "fixed data",
    ) -> None:
        self.details = {d.limit.name: d for d in details}
        self.seed_events = list(events or [])
        self.now = now
        self.coordinator_id = coordinator_id
        self._label = label
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    @property
    def label(self) -> str:
        return self._label

    @property
    def link_up(self) -> bool:
        return True

    async def open(self, on_link: LinkCallback) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> str:
        return self.coordinator_id

    async def list_limits(self) -> list[LimitInfo]:
        return [d.limit for d in self.details.values()]

    async def get_limit(self, name: str) -> LimitDetail:
        return self._detail(name)

    async def events(self) -> AsyncIterator[Event]:
        for event in self.seed_events:
            yield event
        while True:
            yield await self._queue.get()

    def _detail(self, name: str) -> LimitDetail:
        try:
            return self.details[name]
        except KeyError:
            raise LimitNotFound(f"no limit named {name!r}") from None

    def _publish(self, kind: str, names: list[str], limits: list[LimitInfo]) -> None:
        event = Event.model_validate(
            {"kind": kind, "at": self.now, "names": names, "limits": limits}
        )
        self._queue.put_nowait(event)

    async def create_limit(self, spec: LimitSpec) -> LimitInfo:
        if spec.name in self.details:
            raise LimitExists(f"a limit named {spec.name!r} already exists")
        info = LimitInfo(
            name=spec.name,
            limit=spec.limit,
            active=spec.active,
            slot_decay_per_second=spec.slot_decay_per_second,
            occupied=0,
            held=0,
            leases=0,
            waiters=0,
            denied=0,
            avg_occupancy_seconds=0,
            fencing_token=0,
            created_at=self.now,
            updated_at=self.now,
        )
        self.details[spec.name] = LimitDetail(limit=info, holders=[], waiters=[])
        self._publish("limit.created", [spec.name], [info])
        return info

    async def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
    ) -> LimitInfo:
        detail = self._detail(name)
        changes = {
            k: v
            for k, v in {
                "limit": limit,
                "active": active,
                "slot_decay_per_second": slot_decay_per_second,
            }.items()
            if v is not None
        }
        info = detail.limit.model_copy(update=changes)
        self.details[name] = detail.model_copy(update={"limit": info})
        self._publish("limit.updated", [name], [info])
        return info

    async def delete_limit(self, name: str) -> Deleted:
        detail = self._detail(name)
        del self.details[name]
        self._publish("limit.deleted", [name], [])
        return Deleted(name=name, released_leases=len(detail.holders))

    async def revoke_lease(self, lease_id: str) -> Revoked:
        for name, detail in self.details.items():
            holders = [h for h in detail.holders if h.lease_id != lease_id]
            if len(holders) != len(detail.holders):
                self.details[name] = detail.model_copy(update={"holders": holders})
                self._publish("lease.revoked", [name], [detail.limit])
                return Revoked(lease_id=lease_id)
        raise LeaseNotFound(f"no lease {lease_id!r}")
