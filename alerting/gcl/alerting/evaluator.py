"""Rule evaluation as a pure state machine: events and the passing of time in, alerts out.

Time is the events' own wall-clock `at`, advanced by `advance(now)` between events, so a replay
of stored events fires the same alerts as following them live would have. Each rule keeps a set
of firing keys (a limit, or a limit and a holder): an alert goes out when a key enters the set
and when it leaves, never per event in between.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from gcl.alerting.alert import Alert, Figures, State, figures_of
from gcl.alerting.rules import Rule
from gcl.protocol import Event, Holder, LimitInfo, WaiterInfo
from gcl.protocol.names import matches
from gcl.sdk import format as fmt

MAX_WAITERS = 100_000
MAX_EXPIRY_KEYS = 10_000
MAX_COUNTS = 10_000


@dataclass
class LimitState:
    info: LimitInfo
    as_of: float
    saturated_since: float | None = None
    denials: deque[float] = field(default_factory=deque)
    timeouts: deque[float] = field(default_factory=deque)


@dataclass
class WaiterState:
    names: list[str]
    holder: Holder | None
    queued_at: float


@dataclass
class Expiry:
    limit: str
    first_at: float
    last_at: float
    holder: Holder | None
    lease_id: str | None
    figures: Figures
    count: int = 1


@dataclass
class Observation:
    """A rule's condition holding on one key now."""

    limit: str
    since: float | None
    figures: Figures = field(default_factory=dict)
    holder: Holder | None = None
    lease_id: str | None = None
    request_id: str | None = None


class Evaluator:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.now = 0.0
        self.limits: dict[str, LimitState] = {}
        self.waiters: OrderedDict[str, WaiterState] = OrderedDict()
        self.expiries: OrderedDict[str, Expiry] = OrderedDict()
        self.firing: dict[str, dict[str, Observation]] = {r.name: {} for r in self.rules}
        self._true_since: dict[tuple[str, str], float] = {}
        self._window = max((r.window_seconds for r in self.rules), default=60.0)
        self._quiet = max((r.clear_after_seconds for r in self.rules), default=300.0)

    # --- input ------------------------------------------------------------------------------

    def seed(self, limits: Iterable[LimitInfo], waiters: Iterable[WaiterInfo], at: float) -> None:
        """Start from a snapshot (admin API): current figures and who waits since when."""
        self.now = max(self.now, at)
        infos = list(limits)
        known = {info.name for info in infos}
        self.limits = {name: state for name, state in self.limits.items() if name in known}
        for info in infos:
            self._apply_figures(info, at)  # keeps a saturation that is still going on
        previous, self.waiters = self.waiters, OrderedDict()
        for waiter in waiters:
            queued_at = at - waiter.waited_seconds
            old = previous.get(waiter.request_id)
            if old is not None:
                queued_at = min(queued_at, old.queued_at)
            self._add_waiter(waiter.request_id, waiter.names, waiter.holder, queued_at)

    def feed(self, event: Event) -> list[Alert]:
        alerts = self.advance(event.at)
        self._apply(event)
        return alerts + self._evaluate()

    def advance(self, now: float) -> list[Alert]:
        self.now = max(self.now, now)
        self._prune()
        return self._evaluate()

    def _apply(self, event: Event) -> None:
        for info in event.limits:
            self._apply_figures(info, event.at)
        kind = event.kind
        if kind == "waiter.queued" and event.request_id:
            self._add_waiter(event.request_id, event.names, event.holder, event.at)
        elif kind == "lease.granted" or kind.startswith("waiter."):
            self.waiters.pop(event.request_id or "", None)
            if kind == "waiter.timed_out":
                for name in event.names:
                    self._count(name, "timeouts", event.at, 1)
        elif kind == "lease.expired":
            self._expired(event)
        elif kind == "limit.deleted":
            self._deleted(event.names)
        elif kind == "coordinator.started":
            self.waiters.clear()  # queues do not survive a restart; waiters queue again

    def _apply_figures(self, info: LimitInfo, at: float) -> None:
        state = self.limits.get(info.name)
        if state is None:
            state = self.limits[info.name] = LimitState(info, at)
        elif at < state.as_of:
            return  # older than what we know (a snapshot raced this event)
        else:
            self._count(info.name, "denials", at, info.denied - state.info.denied)
        state.info, state.as_of = info, at
        saturated = info.active and info.waiters > 0 and info.occupied >= info.limit
        if not saturated:
            state.saturated_since = None
        elif state.saturated_since is None:
            state.saturated_since = at

    def _count(self, name: str, what: str, at: float, times: int) -> None:
        state = self.limits.get(name)
        if state is None or times <= 0:
            return
        stamps: deque[float] = getattr(state, what)
        stamps.extend([at] * min(times, MAX_COUNTS))
        while len(stamps) > MAX_COUNTS:
            stamps.popleft()

    def _add_waiter(
        self, request_id: str, names: list[str], holder: Holder | None, at: float
    ) -> None:
        self.waiters[request_id] = WaiterState(list(names), holder, at)
        while len(self.waiters) > MAX_WAITERS:
            self.waiters.popitem(last=False)

    def _expired(self, event: Event) -> None:
        figures = {info.name: info for info in event.limits}
        for name in event.names:
            key = f"{name}|{fmt.holder(event.holder, label=False)}"
            known = self.expiries.get(key)
            if known is None:
                self.expiries[key] = Expiry(
                    name,
                    event.at,
                    event.at,
                    event.holder,
                    event.lease_id,
                    figures_of(figures.get(name)),
                )
            else:
                known.last_at, known.count = event.at, known.count + 1
            self.expiries.move_to_end(key)
        while len(self.expiries) > MAX_EXPIRY_KEYS:
            self.expiries.popitem(last=False)

    def _deleted(self, names: list[str]) -> None:
        for name in names:
            self.limits.pop(name, None)
        for request_id, waiter in list(self.waiters.items()):
            waiter.names = [n for n in waiter.names if n not in names]
            if not waiter.names:
                del self.waiters[request_id]

    def _prune(self) -> None:
        for state in self.limits.values():
            for stamps in (state.denials, state.timeouts):
                while stamps and stamps[0] < self.now - self._window:
                    stamps.popleft()
        for key, expiry in list(self.expiries.items()):
            if self.now - expiry.last_at > self._quiet:
                del self.expiries[key]

    # --- evaluation -------------------------------------------------------------------------

    def _evaluate(self) -> list[Alert]:
        alerts: list[Alert] = []
        for rule in self.rules:
            alerts.extend(self._transitions(rule, self._due(rule)))
        return alerts

    def _due(self, rule: Rule) -> dict[str, Observation]:
        """Keys on which the rule's condition holds now, and has for at least for_seconds."""
        observed = OBSERVERS[rule.kind](self, rule)
        due: dict[str, Observation] = {}
        for key, obs in observed.items():
            since = obs.since
            if since is None:
                since = self._true_since.setdefault((rule.name, key), self.now)
                obs.since = since
            if self.now - since >= (rule.for_seconds or 0.0):
                due[key] = obs
        for pair in [p for p in self._true_since if p[0] == rule.name and p[1] not in observed]:
            del self._true_since[pair]
        return due

    def _transitions(self, rule: Rule, due: dict[str, Observation]) -> list[Alert]:
        firing = self.firing[rule.name]
        alerts = []
        for key, obs in due.items():
            if key not in firing:
                alerts.append(self._alert(rule, "firing", obs))
            firing[key] = obs
        for key in [k for k in firing if k not in due]:
            alerts.append(self._alert(rule, "resolved", firing.pop(key)))
        return alerts

    def _alert(self, rule: Rule, state: State, obs: Observation) -> Alert:
        figures = dict(obs.figures)
        current = self.limits.get(obs.limit)
        if state == "resolved" and current is not None:
            figures.update(figures_of(current.info))
        return Alert(
            rule=rule.name,
            kind=rule.kind,
            state=state,
            limit=obs.limit,
            at=self.now,
            since=obs.since or self.now,
            summary=SUMMARIES[rule.kind](rule, state, obs, figures, self.now),
            figures=figures,
            holder=obs.holder,
            lease_id=obs.lease_id,
            request_id=obs.request_id,
        )

    # --- conditions -------------------------------------------------------------------------

    def _saturated(self, rule: Rule) -> dict[str, Observation]:
        return {
            name: Observation(name, state.saturated_since, figures_of(state.info))
            for name, state in self.limits.items()
            if state.saturated_since is not None and _wanted(rule, name)
        }

    def _waiting(self, rule: Rule) -> dict[str, Observation]:
        oldest: dict[str, tuple[str, WaiterState]] = {}
        for request_id, waiter in self.waiters.items():
            for name in waiter.names:
                if _wanted(rule, name) and (
                    name not in oldest or waiter.queued_at < oldest[name][1].queued_at
                ):
                    oldest[name] = (request_id, waiter)
        observed = {}
        for name, (request_id, waiter) in oldest.items():
            waited = self.now - waiter.queued_at
            if waited >= (rule.for_seconds or 0.0):
                state = self.limits.get(name)
                figures = figures_of(state.info if state else None)
                figures["waited_seconds"] = round(waited, 3)
                observed[name] = Observation(
                    name, waiter.queued_at, figures, waiter.holder, request_id=request_id
                )
        return observed

    def _denials(self, rule: Rule) -> dict[str, Observation]:
        observed = {}
        threshold = (rule.per_minute or 0.0) * rule.window_seconds / 60.0
        for name, state in self.limits.items():
            if not _wanted(rule, name):
                continue
            recent = sum(
                sum(1 for at in getattr(state, what) if at >= self.now - rule.window_seconds)
                for what in rule.count
            )
            if recent > threshold:
                figures = figures_of(state.info)
                figures["in_window"] = recent
                figures["per_minute"] = round(recent * 60.0 / rule.window_seconds, 3)
                observed[name] = Observation(name, None, figures)
        return observed

    def _expired_leases(self, rule: Rule) -> dict[str, Observation]:
        return {
            key: Observation(
                e.limit, e.first_at, {**e.figures, "expired": e.count}, e.holder, e.lease_id
            )
            for key, e in self.expiries.items()
            if _wanted(rule, e.limit) and self.now - e.last_at < rule.clear_after_seconds
        }


def _wanted(rule: Rule, name: str) -> bool:
    return any(matches(name, pattern) for pattern in rule.limits)


def _held(figures: Figures) -> str:
    if "limit" not in figures:
        return "figures unknown"
    occupied, waiters = figures.get("occupied", 0), figures.get("waiters", 0)
    return f"{fmt.occupancy(occupied, figures['limit'])} slots held, {waiters} waiting"


def _expired_summary(rule: Rule, state: str, obs: Observation, figures: Figures, now: float) -> str:
    if state == "firing":
        return (
            f"lease {(obs.lease_id or '?')[:12]} on {obs.limit} expired: {fmt.holder(obs.holder)} "
            f"stopped renewing (likely crashed); {_held(figures)}"
        )
    return (
        f"no lease expiry on {obs.limit} from {fmt.holder(obs.holder, label=False)} for "
        f"{fmt.duration(rule.clear_after_seconds)} ({figures.get('expired', 1)} expired in all)"
    )


def _saturated_summary(
    rule: Rule, state: str, obs: Observation, figures: Figures, now: float
) -> str:
    lasted = fmt.duration(now - (obs.since or now))
    if state == "firing":
        return f"{obs.limit} saturated for {lasted}: {_held(figures)}"
    return f"{obs.limit} no longer saturated after {lasted}: {_held(figures)}"


def _waiting_summary(rule: Rule, state: str, obs: Observation, figures: Figures, now: float) -> str:
    over = fmt.duration(rule.for_seconds or 0.0)
    if state == "firing":
        return (
            f"a waiter on {obs.limit} ({fmt.holder(obs.holder)}) has waited "
            f"{fmt.duration(figures.get('waited_seconds', 0))} (over {over}); {_held(figures)}"
        )
    return f"no waiter on {obs.limit} has waited over {over} now; {_held(figures)}"


def _denials_summary(rule: Rule, state: str, obs: Observation, figures: Figures, now: float) -> str:
    what = " and ".join(rule.count)
    most = fmt.number(rule.per_minute or 0.0)
    if state == "firing":
        return (
            f"{obs.limit}: {fmt.number(figures.get('per_minute', 0))} {what} per minute over "
            f"the last {fmt.duration(rule.window_seconds)} (above {most}); {_held(figures)}"
        )
    return f"{obs.limit}: {what} back to at most {most} per minute; {_held(figures)}"


OBSERVERS = {
    "lease_expired": Evaluator._expired_leases,
    "limit_saturated": Evaluator._saturated,
    "waiter_waiting": Evaluator._waiting,
    "denial_rate": Evaluator._denials,
}
SUMMARIES = {
    "lease_expired": _expired_summary,
    "limit_saturated": _saturated_summary,
    "waiter_waiting": _waiting_summary,
    "denial_rate": _denials_summary,
}
