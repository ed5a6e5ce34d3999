"""A lease: slots on one or more limits, held until released, revoked or expired."""

from __future__ import annotations

from dataclasses import dataclass

from gcl.protocol import Holder, LeaseInfo, Mode


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

    def renew(self, now: float) -> None:
        self.expires_at = now + self.ttl

    def info(self, now: float) -> LeaseInfo:
        return LeaseInfo.model_construct(  # trusted state: no re-validation
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
        )
