"""Rules for limit names, shared by coordinator and SDK so both refuse the same names.

Names travel inside JSON payloads, never as subject tokens, so dots and colons are fine
(`gpu:gpu-1`, `db.primary`); what is refused is what breaks shells, URLs or NATS wildcards.
"""

from __future__ import annotations

import fnmatch
import re

MAX_NAME_LENGTH = 200
FORBIDDEN_CHARACTERS = "/%&><*"
_FORBIDDEN = re.compile(r"[\s/%&><*\x00-\x1f\x7f]")
TEMPLATE_FIELD = "{worker_id}"


def name_problem(name: object) -> str | None:
    """Say what is wrong with a limit name, or None when it is acceptable."""
    if not isinstance(name, str):
        return "a limit name must be a string"
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return f"a limit name must be 1 to {MAX_NAME_LENGTH} characters long (got {len(name)})"
    bad = _FORBIDDEN.search(name)
    if bad:
        return (
            f"limit name {name!r} contains {bad.group()!r}: names may not contain whitespace, "
            f"control characters or any of {FORBIDDEN_CHARACTERS}"
        )
    if not name.isprintable():
        return f"limit name {name!r} contains unprintable characters"
    return None


def validate_name(name: str) -> str:
    """Return the name unchanged, or raise ValueError saying what to fix (used by pydantic)."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def matches(name: str, pattern: str) -> bool:
    """Shell-style match used by filters: `gpu:*` matches every per-worker GPU limit."""
    return fnmatch.fnmatchcase(name, pattern)


def template_matches(template: str, name: str) -> bool:
    """`gpu:{worker_id}` matches `gpu:gpu-7`: the field stands for one or more characters."""
    if TEMPLATE_FIELD not in template or TEMPLATE_FIELD in name:
        return False
    head, _, tail = template.partition(TEMPLATE_FIELD)
    return len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail)
