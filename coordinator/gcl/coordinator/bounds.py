"""How much state the coordinator accepts: the caps that keep one client from exhausting it.

Each cap is a `CoordinatorSettings` field (`GCL_MAX_*`); the service hands them to the engine as
one `Bounds`. The defaults are far above any honest workload (docs/architecture.md, "Bounds")
and low enough that the state they allow fits in a few GB. A request that would pass a cap is
refused with `over_capacity`, naming the cap, its value and the setting that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcl.coordinator.errors import Refusal


@dataclass(frozen=True, slots=True)
class Bounds:
    max_limits: int = 10_000
    max_instances_per_template: int = 1_000
    max_leases_per_limit: int = 10_000
    max_leases: int = 1_000_000
    max_waiters_per_limit: int = 10_000
    max_waiters_per_holder: int = 1_000
    max_waiters: int = 100_000

    def refuse(self, cap: str, what: str, field: str | None, advice: str) -> Refusal:
        """`what` has reached `cap`: say so, with what to do and the setting that raises it."""
        value: int = getattr(self, cap)
        return Refusal(
            "over_capacity",
            f"{what} reached the cap of {value:,} ({cap}): {advice}, or raise "
            f"GCL_{cap.upper()} on the coordinator",
            field,
        )
