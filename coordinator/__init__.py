"""gcl's coordinator: the state machine (`Engine`), its store and the NATS service around them."""

from coordinator.clock import Clock, FakeClock, SystemClock
from coordinator.engine import Engine
from coordinator.service import Coordinator, CoordinatorConflict
from coordinator.settings import CoordinatorSettings
from coordinator.store import Store, StoreLocked

__all__ = [
    "Clock",
    "Coordinator",
    "CoordinatorConflict",
    "CoordinatorSettings",
    "Engine",
    "FakeClock",
    "Store",
    "StoreLocked",
    "SystemClock",
]
