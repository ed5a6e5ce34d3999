"""A lease: slots on one or more limits, held until released, revoked or expired."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from gcl.coordinator.trusted import built
from gcl.protocol import Holder, LeaseInfo, Mode


def secret_digest(secret: str) -> str:
    """What the coordinator keeps of a holder's secret: enough to check it, not to reveal it."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(slots=True)
class Lease:
    lease_id: str
    request_id: str
    names: list[str]
    occupy: int
    mode: Mode
    ttl: float
    holder: Holder
    granted_at: float
    granted_mono: float
    expires_at: float
    fencing_tokens: dict[str, int]
    secret_hash: str = field(default="", repr=False)
    notify: str | None = None  # the acquire's inbox (v3): told at once if the lease is lost
    long_lived: bool = False  # not renewed: ends at release, revoke, or its (long) ttl

    def owned_by(self, secret: str) -> bool:
        """True when `secret` is the one this lease was granted with."""
        return bool(self.secret_hash) and hmac.compare_digest(
            self.secret_hash, secret_digest(secret)
        )

    def renew(self, now: float) -> None:
        self.expires_at = now + self.ttl

    def info(self, now: float) -> LeaseInfo:
        return built(  # trusted state: no re-validation
            LeaseInfo,
            lease_id=self.lease_id,
            request_id=self.request_id,
            names=list(self.names),
            occupy=self.occupy,
            mode=self.mode,
            ttl=self.ttl,
            holder=self.holder,
            granted_at=self.granted_at,
            expires_in=round(max(0.0, self.expires_at - now), 6),
            fencing_tokens=dict(self.fencing_tokens),
            long_lived=self.long_lived,
        )

    def wall_expiry(self) -> float:
        """When a lease nobody renews ends, in Unix seconds: its grant plus its ttl."""
        return self.granted_at + self.ttl
