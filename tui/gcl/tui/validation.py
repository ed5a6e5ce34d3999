"""Check form input before anything is sent, and say what to fix.

The same rules as the wire schema (`gcl.protocol.LimitCreate`), applied to raw text so the
form can point at the field that is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gcl.protocol import MAX_SLOTS
from gcl.protocol.names import name_problem

MAX_DECAY = 1e9


class FormError(ValueError):
    """Input the coordinator would refuse; `field` is the form field to focus."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    slot_decay_per_second: float = 0.0
    active: bool = True


def parse_name(text: str) -> str:
    problem = name_problem(text.strip())
    if problem:
        raise FormError("name", problem)
    return text.strip()


def parse_slots(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise FormError(
            "slots", f"slots must be a whole number from 0 to {MAX_SLOTS} (got {text!r})"
        ) from None
    if not 0 <= value <= MAX_SLOTS:
        raise FormError("slots", f"slots must be from 0 to {MAX_SLOTS} (got {value})")
    return value


def parse_decay(text: str) -> float:
    text = text.strip() or "0"
    try:
        value = float(text)
    except ValueError:
        raise FormError(
            "decay", f"decay must be a number of slots per second, 0 or more (got {text!r})"
        ) from None
    if not math.isfinite(value) or not 0 <= value <= MAX_DECAY:
        raise FormError("decay", f"decay must be from 0 to {MAX_DECAY:g} per second (got {text})")
    return value


def parse_limit(name: str, slots: str, decay: str, active: bool = True) -> LimitSpec:
    return LimitSpec(parse_name(name), parse_slots(slots), parse_decay(decay), active)
