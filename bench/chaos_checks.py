"""The invariants a chaos run is judged by, as pure functions over what the run recorded.

Kept apart from the run itself (bench/chaos.py) so each check can be shown to fail on a
history that breaks it (tests/test_chaos.py): a checker that cannot fail proves nothing.

Inputs:
- `Grant`: a grant a client process saw (from its JSONL log), with how its release went.
- `Event`s from the JetStream stream GCL_EVENTS, in stream order.
- `Faults`: when NATS was down, when the coordinator was killed or (re)started, when the
  database was stalled, when each client process was killed.
- the live leases the coordinator still listed at the end.

Times are `time.time()` on this one host, so client and coordinator clocks are the same clock.

Why each check is sound (never reports a violation that did not happen) is said at each
function; docs/benchmarks.md ("Chaos run") sums it up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gcl.protocol import Event

END_KINDS = frozenset({"lease.released", "lease.expired", "lease.revoked"})
# A client's wall clock and the coordinator's (monotonic) expiry clock may disagree by this
# much; shrinking the only inferred bound by it keeps the sweep sound.
CLOCK_SLACK = 0.05
# How long after NATS is listening again an event may still be lost in flight (clients and the
# coordinator reconnect every 0.5 s; the coordinator publishes what it buffered meanwhile).
NATS_RECOVERY = 3.0
NATS_BEFORE = 0.5  # an event handed to the socket just before the stop dies with it
KILL_BEFORE = 1.0  # events committed in the last second before a kill -9 may be unpublished
KILL_AFTER = 0.2
EXPIRY_SLACK = 2.0  # a loaded machine fires the expiry timer late
RATE_TOLERANCE = 0.01  # slots: float rounding and wall-vs-monotonic drift over the window


@dataclass
class Grant:
    """A grant one client process saw, and what became of it."""

    lease_id: str
    request_id: str
    names: list[str]
    occupy: int
    mode: str
    ttl: float
    tokens: dict[str, int]
    granted_at: float  # the coordinator's wall clock at the grant (LeaseInfo.granted_at)
    t_acq: float  # client: time.time() right after acquire returned
    proc: str  # which client process (slot-generation)
    pid: int
    t_rel: float | None = None  # client: right before it sent the release
    t_done: float | None = None  # client: when the release call returned
    # released | already | lost | not_found | unreachable | error:<type> | None (no release)
    outcome: str | None = None

    @property
    def confirmed(self) -> bool:
        """The coordinator answered the release with released=True (this or an earlier try):
        the lease was live at the coordinator from its grant until at least `t_rel`."""
        return self.outcome == "released" and self.t_rel is not None


@dataclass
class Faults:
    """What the fault script did, and when (all `time.time()`)."""

    nats_down: list[tuple[float, float]] = field(default_factory=list)  # stop .. listening
    coordinator_kills: list[float] = field(default_factory=list)
    coordinator_starts: list[float] = field(default_factory=list)  # ready (answering pings)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # lock held .. released
    process_ends: dict[str, float] = field(default_factory=dict)  # proc -> killed or exited
    process_pids: dict[int, str] = field(default_factory=dict)  # pid -> proc
    # per coordinator restart: when it was killed, when it served again, the leases it listed
    # right then (what it restored)
    restores: list[tuple[float, float, frozenset[str]]] = field(default_factory=list)

    def outage_windows(self) -> list[tuple[float, float]]:
        """When an event may be lost: NATS down (plus reconnection) and around a kill -9."""
        windows = [(lo - NATS_BEFORE, hi + NATS_RECOVERY) for lo, hi in self.nats_down]
        windows += [(t - KILL_BEFORE, t + KILL_AFTER) for t in self.coordinator_kills]
        return windows

    def in_outage(self, lo: float, hi: float | None = None) -> bool:
        hi = lo if hi is None else hi
        return any(a <= hi and lo <= b for a, b in self.outage_windows())

    def run_of(self, at: float) -> int:
        """Which coordinator run (0, 1, ...) an instant belongs to: runs split at kills."""
        return sum(1 for t in self.coordinator_kills if t <= at)


@dataclass
class Check:
    """One invariant: how many violations, and a few examples to start debugging from."""

    name: str
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str = ""

    def fail(self, example: str) -> None:
        self.violations += 1
        if len(self.examples) < 5:
            self.examples.append(example)


# --- over-grants ----------------------------------------------------------------------------


def held_interval(
    grant: Grant, end_at: float | None, process_end: float | None, final: float
) -> tuple[float, float] | None:
    """The part of a client's hold during which the coordinator surely still had the lease.

    From `t_acq` (after the grant reply, so after the grant) to:
    - `t_rel` when the release was confirmed: the lease was live at the coordinator until the
      release reached it, and a lease never comes back to life after it ended (an end is
      committed before anything it makes room for is granted);
    - otherwise the earlier of when the client stopped holding (its release, or its process
      being killed) and when the coordinator ended it: the `at` of its end event, or, with no
      end event, `granted_at + ttl`: without a revoke (the run revokes nothing) a lease ends
      before that only by its holder's release, and renewals and restarts only move it later.

    Sweeping these intervals can only find holders the coordinator really let overlap.
    """
    if grant.confirmed:
        assert grant.t_rel is not None
        end = grant.t_rel
    else:
        stop = grant.t_rel if grant.t_rel is not None else (process_end or final)
        bound = end_at if end_at is not None else grant.granted_at + grant.ttl - CLOCK_SLACK
        end = min(stop, bound)
    return (grant.t_acq, end) if end > grant.t_acq else None


def over_grants(
    grants: Iterable[Grant],
    limits: dict[str, int],
    end_at: dict[str, float],
    faults: Faults,
    final: float,
) -> tuple[Check, dict[str, int]]:
    """Interval sweep per limit: never more than `limit` slots held at once. Multi-name grants
    count on each name; `occupy` counts as that many holders. Rate grants are not held."""
    check = Check("over-grants (holders' intervals, per limit)")
    points: dict[str, list[tuple[float, int, int, str]]] = defaultdict(list)
    for grant in grants:
        if grant.mode != "concurrency":
            continue
        span = held_interval(
            grant, end_at.get(grant.lease_id), faults.process_ends.get(grant.proc), final
        )
        if span is None:
            continue
        for name in grant.names:
            if name in limits:
                # ends sort before starts at the same instant: intervals are half-open
                points[name].append((span[0], 1, grant.occupy, grant.lease_id))
                points[name].append((span[1], 0, -grant.occupy, grant.lease_id))
    peaks: dict[str, int] = {}
    for name, limit in limits.items():
        held, peak = 0, 0
        for at, _, delta, lease_id in sorted(points[name]):
            held += delta
            peak = max(peak, held)
            if delta > 0 and held > limit:
                check.fail(f"{name}: {held} > {limit} holders at {at:.3f} (lease {lease_id})")
        peaks[name] = peak
    return check, peaks


def reported_over_grants(events: Iterable[Event], prefix: str) -> Check:
    """The coordinator's own figures: every event carries each named limit's `held` and
    `occupied` right after the change; an enforcing limit must never exceed its size."""
    check = Check("over-grants (coordinator's own figures in every event)")
    for event in events:
        for info in event.limits:
            if not info.name.startswith(prefix) or not info.active:
                continue
            if info.held > info.limit or info.occupied > info.limit + 1e-6:
                check.fail(
                    f"{event.kind} at {event.at:.3f}: {info.name} held {info.held}, "
                    f"occupied {info.occupied} of {info.limit}"
                )
    return check


def rate_over_grants(grants: dict[str, tuple[float, int]], limit: int, per_second: float) -> Check:
    """Rate grants (lease id -> (granted_at, occupy)): in any window [t1, t2], at most
    `limit + per_second * (t2 - t1)` slots (a burst of `limit`, then the drain rate). Sound
    across restarts too: a restarted coordinator resumes from the level last written, which
    is never below the true one."""
    check = Check(f"rate over-grants ({limit} + {per_second:g}/s)")
    ordered = sorted(grants.values())
    for i, (start, _) in enumerate(ordered):
        total = 0
        for at, occupy in ordered[i:]:
            total += occupy
            allowed = limit + per_second * (at - start) + RATE_TOLERANCE
            if total > allowed:
                check.fail(f"{total} slots granted in {at - start:.3f}s from {start:.3f}")
                break
    return check


# --- fencing tokens -------------------------------------------------------------------------


def fencing(grants: list[Grant], events: list[Event], faults: Faults, prefix: str) -> Check:
    """Per limit: no token handed to two leases; tokens grow with grant order.

    Tokens come from the clients (what they were handed) and from `lease.granted` events (each
    carries the limit's figures right after the grant, whose `fencing_token` is that grant's).
    Order is checked twice: along the stream (one coordinator publishes its events in order;
    runs follow each other) and along the clients' grants sorted by the coordinator's
    `granted_at`. Violations inside one coordinator run and across a restart are told apart."""
    check = Check("fencing tokens (duplicates, order)")
    owners: dict[tuple[str, int], set[str]] = defaultdict(set)
    seen_tokens: dict[str, dict[str, int]] = {}
    within = across = duplicates = mismatched = 0
    for grant in grants:
        seen_tokens[grant.lease_id] = grant.tokens
        for name, token in grant.tokens.items():
            owners[(name, token)].add(grant.lease_id)
    last: dict[str, tuple[int, float]] = {}
    for event in events:
        if event.kind != "lease.granted" or event.lease_id is None:
            continue
        for info in event.limits:
            if not info.name.startswith(prefix):
                continue
            token = info.fencing_token
            owners[(info.name, token)].add(event.lease_id)
            client = seen_tokens.get(event.lease_id)
            if client is not None and client.get(info.name) != token:
                mismatched += 1
                check.fail(f"{event.lease_id}: client token {client} vs event {token}")
            previous = last.get(info.name)
            if previous is not None and token <= previous[0]:
                same_run = faults.run_of(previous[1]) == faults.run_of(event.at)
                within += same_run
                across += not same_run
                check.fail(
                    f"{info.name}: token {token} after {previous[0]} in the stream "
                    f"({'same run' if same_run else 'across a restart'})"
                )
            last[info.name] = (token, event.at)
    for (name, token), leases in owners.items():
        if len(leases) > 1:
            duplicates += 1
            check.fail(f"{name}: token {token} held by {sorted(leases)}")
    by_limit: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for grant in grants:
        for name, token in grant.tokens.items():
            by_limit[name].append((grant.granted_at, token, grant.lease_id))
    for name, rows in by_limit.items():
        rows.sort()
        best: tuple[int, float] = (-1, 0.0)  # the highest token of strictly earlier grants
        group_at, group_best = None, best
        for at, token, lease_id in rows:
            if at != group_at:  # grants at the very same instant may come in either order
                best = max(best, group_best)
                group_at, group_best = at, best
            if token <= best[0]:
                same_run = faults.run_of(best[1]) == faults.run_of(at)
                within += same_run
                across += not same_run
                check.fail(
                    f"{name}: {lease_id} granted at {at:.6f} got token {token}, not above "
                    f"{best[0]} granted before it"
                )
            group_best = max(group_best, (token, at))
    check.detail = (
        f"duplicates {duplicates}, out of order within a run {within}, across a restart "
        f"{across}, client/event mismatches {mismatched}"
    )
    return check


# --- lost leases ----------------------------------------------------------------------------


@dataclass
class LeaseStory:
    """Everything known of one concurrency lease, from the clients and the stream."""

    lease_id: str
    ttl: float | None = None
    granted_at: float | None = None
    grant: Grant | None = None
    granted_event: Event | None = None
    end_event: Event | None = None
    holder_pid: int | None = None


def end_range(story: LeaseStory, faults: Faults, final: float) -> tuple[float, float]:
    """When the lease can have ended: around its release when that was confirmed. Otherwise
    not before its holder's release or its expiry, whichever is first (without revokes nothing
    else ends a lease a client saw), and not after its expiry at the latest: `ttl` after its
    holder stopped renewing (released, killed, or its process ended), pushed to `ttl` past
    every coordinator start after that (a restart gives every lease a fresh TTL) and by every
    database stall (no timer fires while the coordinator waits on a locked database)."""
    grant = story.grant
    if grant is not None and grant.confirmed:
        assert grant.t_rel is not None
        return grant.t_rel, grant.t_done or final
    lo = story.granted_at if story.granted_at is not None else final
    if grant is not None:  # it ended by its holder's release, or by expiry, not before either
        lo = max(lo, min(grant.t_rel or final, grant.granted_at + grant.ttl - CLOCK_SLACK))
    ttl = story.ttl or 0.0
    proc = grant.proc if grant else faults.process_pids.get(story.holder_pid or -1)
    if grant is not None and grant.t_rel is not None:
        stopped = grant.t_rel
    else:
        stopped = faults.process_ends.get(proc, final) if proc else final
    hi = max(lo, stopped) + ttl + EXPIRY_SLACK
    starts: set[int] = set()
    stalls: set[int] = set()
    changed = True
    while changed:  # each start and stall is counted once, so this ends
        changed = False
        for i, started in enumerate(faults.coordinator_starts):
            if i not in starts and lo <= started <= hi:
                starts.add(i)
                hi, changed = max(hi, started + ttl + EXPIRY_SLACK), True
        for i, (a, b) in enumerate(faults.stalls):
            if i not in stalls and a <= hi and lo <= b:
                stalls.add(i)
                hi, changed = hi + (b - a), True
    return lo, min(hi, final)


def lost_leases(
    grants: Iterable[Grant],
    events: list[Event],
    final_leases: Iterable[str],
    faults: Faults,
    final: float,
    rate_names: frozenset[str],
    max_ttl: float,
) -> tuple[Check, dict[str, int]]:
    """A lease is lost if its slots never came back, or it vanished without a trace.

    - leaked: the coordinator still lists it at the end, after every client stopped and the
      longest TTL passed since then and since the last coordinator start;
    - a `lease.granted` event with no end event (released, expired, revoked), not leaked: it
      ended unrecorded. Events are published with core NATS after the commit, so an event can
      be lost while NATS is down or when the coordinator is killed between commit and publish:
      the end counts as lost in an outage if the time it can have happened (`end_range`)
      overlaps one, and as a lost lease otherwise;
    - a grant a client saw with no `lease.granted` event: likewise, by its `granted_at`.
    Rate grants hold nothing and have no end: left out.
    """
    check = Check("lost leases")
    counts = {
        "leaked": 0,
        "end_unrecorded": 0,
        "grant_unrecorded": 0,
        "end_events_lost_in_outage": 0,
        "grant_events_lost_in_outage": 0,
        "stories": 0,
    }
    stories: dict[str, LeaseStory] = {}

    def story(lease_id: str) -> LeaseStory:
        return stories.setdefault(lease_id, LeaseStory(lease_id))

    for grant in grants:
        if grant.mode != "concurrency":
            continue
        s = story(grant.lease_id)
        s.grant, s.ttl, s.granted_at, s.holder_pid = grant, grant.ttl, grant.granted_at, grant.pid
    for event in events:
        if event.lease_id is None or set(event.names) & rate_names:
            continue
        if event.kind == "lease.granted":
            s = story(event.lease_id)
            s.granted_event = event
            if s.granted_at is None:
                s.granted_at = event.at
        elif event.kind in END_KINDS:
            s = story(event.lease_id)
            s.end_event = s.end_event or event
        else:
            continue
        if event.holder is not None and s.holder_pid is None:
            s.holder_pid = event.holder.pid
    still_held = set(final_leases)
    counts["stories"] = len(stories)
    for lease_id, s in stories.items():
        if s.ttl is None:  # events carry no TTL: a lease no client saw gets the longest
            s.ttl = max_ttl
        if lease_id in still_held:
            counts["leaked"] += 1
            check.fail(f"{lease_id} is still held at the end")
            continue
        if s.grant is not None and s.granted_event is None:
            if faults.in_outage(s.grant.granted_at):
                counts["grant_events_lost_in_outage"] += 1
            else:
                counts["grant_unrecorded"] += 1
                check.fail(
                    f"{lease_id}: a client saw it granted at {s.grant.granted_at:.3f}, "
                    "no lease.granted event, no outage then"
                )
        if s.end_event is None:
            lo, hi = end_range(s, faults, final)
            if faults.in_outage(lo, hi):
                counts["end_events_lost_in_outage"] += 1
            else:
                counts["end_unrecorded"] += 1
                check.fail(
                    f"{lease_id}: granted, gone at the end, no end event, and no outage "
                    f"in {lo:.3f}..{hi:.3f}"
                )
    for lease_id in still_held - set(stories):
        counts["leaked"] += 1
        check.fail(f"{lease_id} is still held at the end (never seen granted)")
    return check, counts


def forgotten_at_restart(grants: Iterable[Grant], ends: dict[str, float], faults: Faults) -> Check:
    """A lease certainly live when the coordinator was killed must be restored by the next one.

    Certainly live at the kill: a client saw it granted (so its grant was committed) before the
    kill, had not begun to release it, and its TTL had not run out since the grant (with no
    revoke, only its holder's release or its expiry, never before `granted_at + ttl`, end it).
    It must be among the leases the restarted coordinator listed when it first answered us,
    or the new coordinator must have ended it (an end event after the kill, or a release it
    confirmed: the old one was dead by then) before that listing. This reads the coordinator's
    state and answers, so no event outage excuses it."""
    check = Check("leases forgotten by a coordinator restart")
    for killed, _ready, restored in faults.restores:
        for grant in grants:
            if grant.mode != "concurrency" or grant.granted_at >= killed:
                continue
            if grant.t_rel is not None and grant.t_rel <= killed:
                continue
            if grant.granted_at + grant.ttl - CLOCK_SLACK <= killed:
                continue
            if grant.lease_id in restored or ends.get(grant.lease_id, 0.0) >= killed:
                continue  # listed, or ended since by the new coordinator, which so had it
            if grant.confirmed and grant.t_rel is not None and grant.t_rel > killed:
                continue  # the new coordinator released it: it had it
            check.fail(
                f"{grant.lease_id} ({grant.names}) granted at {grant.granted_at:.3f}, live at "
                f"the kill at {killed:.3f}, not restored"
            )
    return check


def end_times(events: Iterable[Event]) -> dict[str, float]:
    """Lease id -> when the coordinator ended it (the first end event's `at`)."""
    ends: dict[str, float] = {}
    for event in events:
        if event.kind in END_KINDS and event.lease_id is not None:
            ends.setdefault(event.lease_id, event.at)
    return ends
