"""The lease a caller holds inside `concurrency()`: ids, fencing tokens, and whether it was lost."""

from __future__ import annotations

import threading

from gcl.protocol import LeaseInfo

# Marking a lease lost is rare (and quick): one lock for every lease, not one made per lease.
_marking = threading.Lock()


class Lease:
    """What `concurrency()` yields. Pass `fencing_token` to the resource to refuse stale holders."""

    def __init__(
        self, info: LeaseInfo | None, names: list[str], missing: list[str], secret: str = ""
    ) -> None:
        self.info = info
        self.secret = secret  # proves this process holds the lease; never printed
        self.names = names
        self.missing = missing
        self._lost = False  # set once, under `_marking`: the renewer's thread may set it
        self.lost_reason = ""
        self.lost_by: str | None = None  # the operator who revoked it, when the coordinator said
        self.renewal_key = 0

    @property
    def lease_id(self) -> str | None:
        return self.info.lease_id if self.info else None

    @property
    def fencing_tokens(self) -> dict[str, int]:
        return dict(self.info.fencing_tokens) if self.info else {}

    @property
    def fencing_token(self) -> int | None:
        """The token of the first name: enough for the common one-limit case."""
        tokens = self.fencing_tokens
        return tokens.get(self.names[0]) if tokens and self.names else None

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def long_lived(self) -> bool:
        return bool(self.info and self.info.long_lived)

    def mark_lost(self, reason: str, actor: str | None = None) -> bool:
        """Record the loss; True only the first time (the pushed notice and a failed renewal
        may both report it, and the holder should hear of it once)."""
        with _marking:
            if self._lost:
                return False
            self.lost_reason = reason
            self.lost_by = actor
            self._lost = True
            return True

    def __repr__(self) -> str:
        state = f"lost: {self.lost_reason}" if self.lost else "held"
        return f"<Lease {self.lease_id} {self.names} {state}>"
