"""Wire models built from values the coordinator computed itself, without re-validating them.

Requests from outside are validated in full (`model_validate_json`). What the engine builds
from its own state (lease and limit figures, events, results) was checked on the way in, and
pydantic's `model_construct` still costs 3-8 µs per object in Python: it fills defaults,
deep-copies mutable ones and tracks which fields were set. On the hot path (two events, two
results and their lease and limit figures per acquire+release) `built` does only what an
instance needs. Callers give every field; tests check the objects equal validated ones.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def built(model: type[M], **values: Any) -> M:
    """An instance of `model` holding `values` (every field, trusted) as they are."""
    instance = model.__new__(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
