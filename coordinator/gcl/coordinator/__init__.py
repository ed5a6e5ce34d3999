"""gcl's coordinator: the state machine (`Engine`), its store and the NATS service around them."""

from gcl.coordinator.clock import Clock, SystemClock
from gcl.coordinator.engine import Engine
from gcl.coordinator.service import Coordinator, CoordinatorConflict
from gcl.coordinator.settings import CoordinatorSettings
from gcl.coordinator.store import Store, StoreLocked

__all__ = [
    "Clock",
    "Coordinator",
    "CoordinatorConflict",
    "CoordinatorSettings",
    "Engine",
    "Store",
    "StoreLocked",
    "SystemClock",
]
