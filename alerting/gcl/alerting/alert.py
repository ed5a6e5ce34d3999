"""The alert itself: what actions receive, as JSON, when a rule starts or stops firing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, computed_field

from gcl.alerting.rules import RuleKind
from gcl.protocol import Holder, LimitInfo

State = Literal["firing", "resolved"]
Figures = dict[str, float | int | bool]


class Alert(BaseModel):
    """One transition of one rule on one limit: `firing` once, then `resolved` once."""

    rule: str
    kind: RuleKind
    state: State
    limit: str
    at: float
    since: float
    summary: str
    figures: Figures = {}
    holder: Holder | None = None
    lease_id: str | None = None
    request_id: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def at_iso(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float:
        """How long the condition had held: at firing, and over its whole life at resolve."""
        return round(max(0.0, self.at - self.since), 3)

    def line(self) -> str:
        return f"ALERT {self.state.upper()} [{self.rule}] {self.summary}"


def figures_of(info: LimitInfo | None) -> Figures:
    if info is None:
        return {}
    return {
        "limit": info.limit,
        "occupied": round(info.occupied, 3),
        "held": info.held,
        "leases": info.leases,
        "waiters": info.waiters,
        "active": info.active,
        "denied": info.denied,
    }
