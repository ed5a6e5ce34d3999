"""What one or more state-machine steps changed: records to write, then messages to send.

The service commits a `Changes` in one transaction and only then publishes its events and
notices, so nobody hears of a grant that a crash could still undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gcl.coordinator.leases import Lease
from gcl.coordinator.limits import Limit
from gcl.protocol import Event, LostNotice, WaitNotice


@dataclass
class Changes:
    # the live limits a step changed (None: deleted), snapshotted by `freeze` at hand-off
    limits: dict[str, Limit | None] = field(default_factory=dict)
    leases_added: dict[str, Lease] = field(default_factory=dict)
    leases_removed: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    notices: list[tuple[str, WaitNotice | LostNotice]] = field(default_factory=list)
    # A reply that writes nothing yet must not leave a deposed leader (a grant of only unknown
    # names, "not enforced"): commit anyway, since every commit checks the leader's epoch.
    confirm: bool = False

    def __bool__(self) -> bool:
        return self.durable or bool(self.events or self.notices)

    @property
    def durable(self) -> bool:
        """True when there is something to commit before replying."""
        return bool(self.limits or self.leases_added or self.leases_removed or self.confirm)

    def put_limit(self, name: str, limit: Limit | None) -> None:
        self.limits[name] = limit

    def add_lease(self, lease: Lease) -> None:
        self.leases_added[lease.lease_id] = lease

    def remove_lease(self, lease_id: str) -> None:
        """A lease added and removed before any commit never needs to touch the disk."""
        if self.leases_added.pop(lease_id, None) is None:
            self.leases_removed.add(lease_id)

    def freeze(self) -> None:
        """Snapshot the limits when the batch is handed to a commit: the live objects keep
        changing while it waits its turn. Once per limit per batch, not once per step (a busy
        limit changes at every grant and release)."""
        self.limits = {n: None if v is None else v.snapshot() for n, v in self.limits.items()}

    def merge(self, later: Changes) -> None:
        self.limits.update(later.limits)
        self.leases_added.update(later.leases_added)
        for lease_id in later.leases_removed:
            self.remove_lease(lease_id)
        self.events.extend(later.events)
        self.notices.extend(later.notices)
        self.confirm = self.confirm or later.confirm
