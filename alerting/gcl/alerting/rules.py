"""Alert rules from a TOML file, with errors that name the line and the field to fix.

[[rule]]
name = "gpu-holder-crashed"
kind = "lease_expired"          # lease_expired | limit_saturated | waiter_waiting | denial_rate
limits = ["gpu:*"]              # name patterns; default every limit
actions = ["log", "ops-hook"]   # default ["log"]

[action.ops-hook]
type = "webhook"                # log | command | webhook
url = "https://hooks.example.com/gcl"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gcl.sdk.events import parse_duration
from gcl.sdk.exceptions import GCLError, InvalidRequest

RuleKind = Literal["lease_expired", "limit_saturated", "waiter_waiting", "denial_rate"]
BUILTIN_LOG = "log"
MAX_SHOWN_ERRORS = 5


class RulesError(GCLError):
    """The rules file cannot be used; the message says where (file:line) and which field."""


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value, "duration")
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0, le=30 * 86_400)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionSpec(Strict):
    """Where alerts go. Every action runs on its own queue: a slow one never delays another."""

    type: Literal["log", "command", "webhook"]
    level: Literal["info", "warning", "error"] = "warning"
    command: list[str] | str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)
    headers: dict[str, str] = {}
    timeout_seconds: Duration = 10.0
    retries: int = Field(default=3, ge=0, le=10)
    backoff_seconds: Duration = 1.0


class Rule(Strict):
    """One condition on limits; fires once when it starts and once when it clears."""

    name: Name
    kind: RuleKind
    limits: list[str] = Field(default=["*"], min_length=1)
    actions: list[str] = Field(default=[BUILTIN_LOG], min_length=1)
    for_seconds: Duration | None = None
    per_minute: float | None = Field(default=None, gt=0, le=1e9)
    window_seconds: Duration = Field(default=60.0, gt=0)
    count: list[Literal["denials", "timeouts"]] = Field(
        default=["denials", "timeouts"], min_length=1
    )
    clear_after_seconds: Duration = 300.0


class RuleFile(Strict):
    rule: list[Rule] = Field(min_length=1)
    action: dict[str, ActionSpec] = {}

    def actions_of(self, rule: Rule) -> list[tuple[str, ActionSpec]]:
        return [(name, self.action.get(name, ActionSpec(type="log"))) for name in rule.actions]


def load_rules(path: str | Path) -> RuleFile:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror or exc}") from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleFile:
    """Parse and check; every problem is reported as `source:line: where field: what`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise RulesError(
            f"{source}:{line.group(1) if line else 1}: not valid TOML: {exc}"
        ) from None
    locator = Locator(text)
    try:
        rules = RuleFile.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, data, locator, source) for error in exc.errors()]
        raise RulesError(_join(problems)) from None
    problems = [f"{source}:{locator.line(loc)}: {msg}" for loc, msg in _semantic(rules)]
    if problems:
        raise RulesError(_join(problems))
    return rules


def _join(problems: list[str]) -> str:
    more = len(problems) - MAX_SHOWN_ERRORS
    shown = problems[:MAX_SHOWN_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
    return "bad rules file:\n  " + "\n  ".join(shown)


def _describe(error: Any, data: dict[str, Any], locator: Locator, source: str) -> str:
    loc = tuple(error["loc"])
    where = _where(loc, data)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return f"{source}:{locator.line(loc)}: {where}: {message}"


def _where(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """`rule 'gpu-saturated' field 'for_seconds'`, from a pydantic location."""
    if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
        rules = data.get("rule") or []
        name = rules[loc[1]].get("name") if loc[1] < len(rules) else None
        label = f"rule {name!r}" if isinstance(name, str) else f"rule #{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:])
        return f"{label} field {field!r}" if field else label
    if len(loc) >= 2 and loc[0] == "action":
        field = ".".join(str(p) for p in loc[2:])
        return f"action {loc[1]!r} field {field!r}" if field else f"action {loc[1]!r}"
    return f"field {'.'.join(str(p) for p in loc)!r}"


def _semantic(rules: RuleFile) -> list[tuple[tuple[Any, ...], str]]:
    """Checks across fields, each tied to the field to change."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    seen: set[str] = set()
    for i, rule in enumerate(rules.rule):
        label = f"rule {rule.name!r}"
        if rule.name in seen:
            problems.append((("rule", i, "name"), f"{label} field 'name': used twice"))
        seen.add(rule.name)
        if rule.kind in ("limit_saturated", "waiter_waiting") and rule.for_seconds is None:
            problems.append(
                (("rule", i), f"{label} field 'for_seconds': required for kind {rule.kind!r}")
            )
        if rule.kind == "denial_rate" and rule.per_minute is None:
            problems.append(
                (("rule", i), f"{label} field 'per_minute': required for kind 'denial_rate'")
            )
        for action in rule.actions:
            if action != BUILTIN_LOG and action not in rules.action:
                problems.append(
                    (
                        ("rule", i, "actions"),
                        f"{label} field 'actions': no [action.{action}] table is defined "
                        f"(defined: {', '.join(sorted(rules.action)) or 'none'}; "
                        "'log' is built in)",
                    )
                )
    for name, spec in rules.action.items():
        if spec.type == "command" and not spec.command:
            problems.append(
                (("action", name), f"action {name!r} field 'command': required for a command")
            )
        if spec.type == "webhook" and not spec.url:
            problems.append(
                (("action", name), f"action {name!r} field 'url': required for a webhook")
            )
    return problems


HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
KEY = re.compile(r"^\s*\"?([A-Za-z0-9_-]+)\"?\s*=")


class Locator:
    """Maps a pydantic location to a line of the TOML text (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rule_starts: list[int] = []
        self.action_starts: dict[str, int] = {}
        self.headers: list[int] = []
        for number, line in enumerate(self.lines, start=1):
            match = HEADER.match(line)
            if not match:
                continue
            self.headers.append(number)
            table = match.group(2)
            if match.group(1) == "[[" and table == "rule":
                self.rule_starts.append(number)
            elif table.startswith("action."):
                self.action_starts[table.removeprefix("action.").strip("\"'")] = number

    def line(self, loc: tuple[Any, ...]) -> int:
        start = self._table(loc)
        if start is None:
            return 1
        field = loc[2] if len(loc) > 2 else None
        if isinstance(field, str):
            found = self._key(start, field)
            if found is not None:
                return found
        return start

    def _table(self, loc: tuple[Any, ...]) -> int | None:
        if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
            return self.rule_starts[loc[1]] if loc[1] < len(self.rule_starts) else None
        if len(loc) >= 2 and loc[0] == "action":
            return self.action_starts.get(str(loc[1]))
        return None

    def _key(self, start: int, field: str) -> int | None:
        end = next((h for h in self.headers if h > start), len(self.lines) + 1)
        for number in range(start + 1, end):
            match = KEY.match(self.lines[number - 1])
            if match and match.group(1) == field:
                return number
        return None
