"""The coordinator's state machine: limits, leases, wait queues and decay, with no I/O.

Every public method is one step: it reads the injected clock, changes memory, and records what
must be made durable and announced in `self.changes`. The service around it commits those
changes, then sends replies, notices and events. Nothing here blocks, sleeps or polls; the
service asks `next_deadline()` when to call `tick()` next.
"""

from __future__ import annotations

import heapq
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from gcl.coordinator.bounds import Bounds
from gcl.coordinator.changes import Changes
from gcl.coordinator.clock import Clock
from gcl.coordinator.errors import Refusal
from gcl.coordinator.leases import Lease, secret_digest
from gcl.coordinator.limits import Limit
from gcl.coordinator.paging import Cursors
from gcl.coordinator.ranked import Ranked
from gcl.coordinator.trusted import built
from gcl.coordinator.waiters import Waiter, WaitQueues
from gcl.protocol import (
    DEFAULT_PAGE,
    PROTOCOL_VERSION,
    AcquireRequest,
    AcquireResult,
    Event,
    EventKind,
    Holder,
    LeaseInfo,
    LeaseList,
    LimitCreate,
    LimitDetail,
    LimitInfo,
    LimitList,
    LimitUpdate,
    LostNotice,
    ReleaseResult,
    RenewResult,
    WaitNotice,
    WaitStatus,
)
from gcl.protocol import names as naming

ENDED_MEMORY = 10_000
COMPACT_SLACK = 64  # stale heap entries tolerated beyond the live ones before a rebuild
DEFAULT_KEEPALIVE = 2.0


class Engine:
    """All coordinator state. Single-threaded: the service calls it from one event loop."""

    def __init__(
        self,
        clock: Clock,
        keepalive_seconds: float = DEFAULT_KEEPALIVE,
        bounds: Bounds | None = None,
    ) -> None:
        self.clock = clock
        self.keepalive_seconds = keepalive_seconds
        self.bounds = bounds or Bounds()
        self.limits: dict[str, Limit] = {}
        self.leases: Ranked[Lease] = Ranked(_lease_id)  # in grant order, for paged listing
        self.cursors = Cursors()
        self.lease_by_request: dict[str, str] = {}
        self.queues = WaitQueues()
        self.changes = Changes()
        self._ended: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []
        self._waiter_deadlines: list[tuple[float, str]] = []
        self._decay_blocked: set[str] = set()
        self._rate_grants: OrderedDict[str, Lease] = OrderedDict()
        self._templates: set[str] = set()
        # One shared object per distinct holder of live leases (100k leases, few holders),
        # with the number of leases using it: dropped with its last lease.
        self._holders: dict[Holder, tuple[Holder, int]] = {}
        self._waiting_holders: dict[HolderKey, int] = {}  # waiters per holder, for its cap
        self._instances: dict[str, int] = {}  # limits per template that created them

    # --- stepping ---------------------------------------------------------------------------

    def take_changes(self) -> Changes:
        """Hand the accumulated changes to the service and start a fresh set."""
        changes, self.changes = self.changes, Changes()
        return changes

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which `tick()` has something to do."""
        candidates = [heap[0][0] for heap in (self._expiries, self._waiter_deadlines) if heap]
        now = self.clock.now()
        for name in self._decay_blocked:
            head = self.queues.head(name)
            at = self._decay_wake(head, now) if head else None
            if at is not None:
                candidates.append(at)
        return min(candidates, default=None)

    def _decay_wake(self, waiter: Waiter, now: float) -> float | None:
        """When decay alone will let this waiter in: it must stand first on every enforcing
        limit it names, and each must have room now or gain it by decay (then the latest)."""
        times = []
        for name in waiter.names:
            limit = self.limits[name]
            if self._at_lease_cap(limit):
                return None  # waits for a lease to end, not for decay
            if not limit.active or limit.has_room_enforced(waiter.request.occupy, now):
                continue
            at = limit.room_at(waiter.request.occupy, now)
            if at is None or self.queues.head(name) is not waiter:
                return None  # blocked by holders or by an earlier waiter: a step will wake it
            times.append(at)
        return max(times, default=None)

    def tick(self) -> None:
        """Expire due leases and abandoned waiters; admit waiters that decay made room for."""
        now = self.clock.now()
        self._expire_leases(now)
        self._expire_waiters(now)
        self._pump(list(self._decay_blocked))

    def _expire_leases(self, now: float) -> None:
        """Each live lease has one heap entry, at or before its deadline (renewals only push
        deadlines later): a lease renewed since its entry was made gets it moved on."""
        while self._expiries and self._expiries[0][0] <= now:
            _, lease_id = heapq.heappop(self._expiries)
            lease = self.leases.get(lease_id)
            if lease is None:
                continue  # ended meanwhile: a stale entry
            if lease.expires_at <= now:
                self._end_lease(lease, "lease.expired", "not renewed within its ttl")
            else:
                heapq.heappush(self._expiries, (lease.expires_at, lease_id))

    def _expire_waiters(self, now: float) -> None:
        """As for leases: one entry per waiter, moved on when keepalives pushed it later."""
        while self._waiter_deadlines and self._waiter_deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._waiter_deadlines)
            waiter = self.queues.get(request_id)
            if waiter is None:
                continue
            if waiter.deadline <= now:
                self._drop_waiter(waiter, "waiter.timed_out", "no keepalive: the waiter is gone")
            else:
                heapq.heappush(self._waiter_deadlines, (waiter.deadline, request_id))

    def _compact_schedules(self) -> None:
        """Entries of ended leases and gone waiters wait in the heaps until their old deadline
        (a day for a released one-day lease); rebuild a heap once they outnumber live ones."""
        if len(self._expiries) > 2 * len(self.leases) + COMPACT_SLACK:
            self._expiries = [(lease.expires_at, i) for i, lease in self.leases.items()]
            heapq.heapify(self._expiries)
        if len(self._waiter_deadlines) > 2 * len(self.queues) + COMPACT_SLACK:
            waiters = self.queues.by_request.items()
            self._waiter_deadlines = [(w.deadline, i) for i, w in waiters]
            heapq.heapify(self._waiter_deadlines)

    # --- acquiring --------------------------------------------------------------------------

    def acquire(self, request: AcquireRequest) -> AcquireResult:
        """Grant now, queue, or refuse. Re-sent requests (same request_id) are idempotent."""
        repeat = self._repeat(request)
        if repeat is not None:
            return repeat
        names, missing = self._resolve(request)
        if not names:  # nothing to hold; the reply still waits for a commit (see `confirm`)
            self.changes.confirm = True
            return AcquireResult(status="granted", request_id=request.request_id, missing=missing)
        now = self.clock.now()
        self._count_denied(names, request.occupy, now)
        if self._admissible(names, request.occupy, now):
            if request.mode == "concurrency":
                self._check_lease_room(names)
            lease = self._grant(request, names, now)
            return self._granted(request.request_id, lease, missing)
        if not request.wait:
            message = _busy_message(names)
            self._emit(
                "waiter.rejected",
                names,
                request_id=request.request_id,
                holder=request.holder,
                reason=message,
            )
            raise Refusal("timeout", message, "timeout_seconds")
        return self._enqueue(request, names, missing, now)

    def _repeat(self, request: AcquireRequest) -> AcquireResult | None:
        """The answer to a re-sent request; a request_id reused for another request is refused."""
        lease_id = self.lease_by_request.get(request.request_id)
        lease = self.leases[lease_id] if lease_id else self._rate_grants.get(request.request_id)
        if lease is not None:
            if not _same_request(lease, request):
                raise _reused(request.request_id)
            return self._granted(request.request_id, lease, [])
        waiter = self.queues.get(request.request_id)
        if waiter is None:
            return None
        if waiter.request.model_copy(update={"notify": request.notify}) != request:
            raise _reused(request.request_id)
        waiter.notify = request.notify or waiter.notify
        self._keep_waiting(waiter, self.clock.now())
        return self._queued(waiter)

    def _resolve(self, request: AcquireRequest) -> tuple[list[str], list[str]]:
        """Split names into known limits and missing ones, and check the request fits them."""
        names = list(dict.fromkeys(request.names))
        for name in names:
            if name not in self.limits:
                self._instantiate(name)
        known = [n for n in names if n in self.limits and not self.limits[n].is_template]
        missing = [n for n in names if n not in known]
        if missing and request.strict:
            raise Refusal(
                "limit_not_found",
                f"no limit named {', '.join(map(repr, missing))}: create it with "
                f"`gcl create {missing[0]} --limit N`, or acquire with strict=False",
                "names",
            )
        for name in known:
            self._check_fits(self.limits[name], request)
        return known, missing

    def _check_fits(self, limit: Limit, request: AcquireRequest) -> None:
        if request.mode == "rate" and limit.slot_decay_per_second <= 0:
            raise Refusal(
                "invalid_request",
                f"rate_limit needs slot_decay_per_second > 0 on limit {limit.name!r}: "
                f"set it with `gcl update {limit.name} --slot-decay-per-second X`",
                "slot_decay_per_second",
            )
        if limit.active and request.occupy > limit.limit:
            raise Refusal(
                "invalid_request",
                f"occupy={request.occupy} can never fit limit {limit.name!r} of "
                f"{limit.limit} slots: ask for at most {limit.limit} or raise the limit",
                "occupy",
            )

    def _admissible(self, names: list[str], occupy: int, now: float) -> bool:
        """A newcomer goes straight in only if nobody queues ahead and every limit has room."""
        return all(self._open_to_newcomer(self.limits[n], occupy, now) for n in names)

    def _open_to_newcomer(self, limit: Limit, occupy: int, now: float) -> bool:
        if not limit.active:
            return True
        return self.queues.depth(limit.name) == 0 and limit.has_room_enforced(occupy, now)

    def _count_denied(self, names: list[str], occupy: int, now: float) -> None:
        """Count every acquire that had to wait, or would have on an inactive (dry-run) limit."""
        for name in names:
            limit = self.limits[name]
            if self.queues.depth(name) or not limit.has_room_enforced(occupy, now):
                limit.denied += 1
                self._dirty(limit)

    def _check_lease_room(self, names: list[str]) -> None:
        """A grant must not pass the lease caps (inactive limits included)."""
        bounds = self.bounds
        if len(self.leases) >= bounds.max_leases:
            raise bounds.refuse(
                "max_leases", "the coordinator's live leases", "names", "release some"
            )
        for name in names:
            if self._at_lease_cap(self.limits[name]):
                raise bounds.refuse(
                    "max_leases_per_limit",
                    f"limit {name!r}'s live leases",
                    "names",
                    "release or revoke some (`gcl leases NAME`)",
                )

    def _at_lease_cap(self, limit: Limit) -> bool:
        return len(limit.lease_ids) >= self.bounds.max_leases_per_limit

    def _check_queue_room(self, request: AcquireRequest, names: list[str]) -> None:
        """Joining the queues must not pass the waiter caps."""
        bounds = self.bounds
        if len(self.queues) >= bounds.max_waiters:
            raise bounds.refuse("max_waiters", "the coordinator's waiters", "names", "retry later")
        for name in names:
            if self.queues.depth(name) >= bounds.max_waiters_per_limit:
                raise bounds.refuse(
                    "max_waiters_per_limit",
                    f"the queue of limit {name!r}",
                    "names",
                    "retry later or raise the limit",
                )
        if self._waiting_holders.get(_holder_key(request.holder), 0) >= (
            bounds.max_waiters_per_holder
        ):
            holder = request.holder
            raise bounds.refuse(
                "max_waiters_per_holder",
                f"the waiters of holder {holder.worker_id!r} on {holder.host!r} (pid {holder.pid})",
                "holder",
                "wait for some of them first",
            )

    def _enqueue(
        self, request: AcquireRequest, names: list[str], missing: list[str], now: float
    ) -> AcquireResult:
        self._check_queue_room(request, names)
        waiter = Waiter(request, names, missing, queued_at=now, deadline=now, notify=request.notify)
        self.queues.add(waiter)
        key = _holder_key(request.holder)
        self._waiting_holders[key] = self._waiting_holders.get(key, 0) + 1
        self._keep_waiting(waiter, now)
        heapq.heappush(self._waiter_deadlines, (waiter.deadline, waiter.request_id))
        self._emit("waiter.queued", names, request_id=waiter.request_id, holder=request.holder)
        self._note_decay_block(names)
        return self._queued(waiter)

    def _queued(self, waiter: Waiter) -> AcquireResult:
        positions = {n: self.queues.position(n, waiter.request_id) for n in waiter.names}
        return AcquireResult(
            status="queued",
            request_id=waiter.request_id,
            missing=waiter.missing,
            positions=positions,
            keepalive_seconds=self.keepalive_seconds,
        )

    def _granted(self, request_id: str, lease: Lease, missing: list[str]) -> AcquireResult:
        return built(
            AcquireResult,
            status="granted",
            request_id=request_id,
            lease=lease.info(self.clock.now()),
            missing=missing,
            positions={},
            keepalive_seconds=0.0,
        )

    def _keep_waiting(self, waiter: Waiter, now: float) -> None:
        """Push the deadline on; its heap entry (made at enqueue) is moved when it comes due."""
        waiter.deadline = now + 3 * self.keepalive_seconds

    def _grant(self, request: AcquireRequest, names: list[str], now: float) -> Lease:
        tokens = {}
        for name in names:
            limit = self.limits[name]
            limit.fencing_token += 1
            tokens[name] = limit.fencing_token
            self._dirty(limit)
        lease = Lease(
            lease_id=new_lease_id(),
            request_id=request.request_id,
            names=names,
            occupy=request.occupy,
            mode=request.mode,
            ttl=request.lease_ttl,
            holder=request.holder,
            granted_at=self.clock.wall(),
            granted_mono=now,
            expires_at=now + request.lease_ttl,
            fencing_tokens=tokens,
            secret_hash=secret_digest(request.secret),
            notify=request.notify if request.v >= 3 else None,  # v2 clients know no LostNotice
            long_lived=request.long_lived,
        )
        if request.mode == "rate":
            self._spend_rate(lease, now)
            self._rate_grants[lease.request_id] = lease
            _trim(self._rate_grants)
        else:
            self._attach(lease)
        self._emit("lease.granted", names, lease=lease)
        return lease

    def _spend_rate(self, lease: Lease, now: float) -> None:
        """A rate grant is not held: it adds to the decaying level and is done."""
        for name in lease.names:
            limit = self.limits[name]
            limit.settle(now)
            limit.decay_level += lease.occupy

    def _attach(self, lease: Lease) -> None:
        lease.holder = self._share_holder(lease.holder)
        self.leases.add(lease)
        self.lease_by_request[lease.request_id] = lease.lease_id
        heapq.heappush(self._expiries, (lease.expires_at, lease.lease_id))
        for name in lease.names:
            limit = self.limits[name]
            limit.lease_ids.add(lease.lease_id)
            limit.held += lease.occupy
        self.changes.add_lease(lease)

    def _detach(self, lease: Lease, now: float) -> None:
        if self.leases.pop(lease.lease_id, None) is not None:
            self._unshare_holder(lease.holder)
        self.lease_by_request.pop(lease.request_id, None)
        for name in lease.names:
            limit = self.limits.get(name)
            if limit is not None and lease.lease_id in limit.lease_ids:
                limit.lease_ids.discard(lease.lease_id)
                limit.held -= lease.occupy
                limit.record_hold(now - lease.granted_mono, recent=not lease.long_lived)
                self._dirty(limit)
        self.changes.remove_lease(lease.lease_id)
        self._compact_schedules()

    def _share_holder(self, holder: Holder) -> Holder:
        shared, uses = self._holders.get(holder, (holder, 0))
        self._holders[holder] = (shared, uses + 1)
        return shared

    def _unshare_holder(self, holder: Holder) -> None:
        shared, uses = self._holders.get(holder, (holder, 1))
        if uses <= 1:
            self._holders.pop(holder, None)
        else:
            self._holders[holder] = (shared, uses - 1)

    def _pump(self, names: Iterable[str]) -> None:
        """Admit waiters while they fit; each admission may unblock other queues."""
        work = list(dict.fromkeys(names))
        seen = set(work)
        now = self.clock.now()
        while work:
            name = work.pop()
            for waiter in self._candidates(name):
                if self._head_fits(waiter, now):
                    self._admit(waiter, now)
                    work.extend(waiter.names)
                    seen.update(waiter.names)
                    break
        self._note_decay_block(seen)

    def _candidates(self, name: str) -> list[Waiter]:
        """The head of an enforcing queue; everyone in a dry-run queue (it never blocks)."""
        limit = self.limits.get(name)
        if limit is not None and not limit.active:
            return self.queues.queue(name)
        head = self.queues.head(name)
        return [head] if head else []

    def _admit(self, waiter: Waiter, now: float) -> None:
        self._unqueue(waiter)
        lease = self._grant(waiter.request, waiter.names, now)
        notice = WaitNotice(
            request_id=waiter.request_id,
            status="granted",
            lease=lease.info(now),
            missing=waiter.missing,
        )
        self._notify(waiter, notice)

    def _head_fits(self, waiter: Waiter, now: float) -> bool:
        """Fits when, on every enforcing limit it names, it stands first and there is room."""
        for name in waiter.names:
            limit = self.limits[name]
            if self._at_lease_cap(limit):
                return False  # a lease ending on it pumps this queue again
            if not limit.active:
                continue
            if self.queues.head(name) is not waiter:
                return False
            if not limit.has_room_enforced(waiter.request.occupy, now):
                return False
        return True

    def _note_decay_block(self, names: Iterable[str]) -> None:
        """Remember limits whose head waits only on decay, so a wake can be scheduled."""
        for name in names:
            limit = self.limits.get(name)
            if limit and limit.slot_decay_per_second > 0 and self.queues.depth(name):
                self._decay_blocked.add(name)
            else:
                self._decay_blocked.discard(name)

    # --- holding ----------------------------------------------------------------------------

    def renew(self, lease_id: str, secret: str) -> RenewResult:
        lease = self._owned(lease_id, secret)
        if lease.long_lived:
            raise Refusal(
                "invalid_request",
                f"lease {lease_id} is long-lived: it is not renewed, and ends at release, revoke "
                "or its ttl; to hold longer, acquire a new one with a longer ttl",
                "lease_id",
            )
        lease.renew(self.clock.now())  # its one heap entry moves on when it comes due
        return built(RenewResult, lease_id=lease_id, expires_in=lease.ttl)

    def release(self, lease_id: str, secret: str) -> ReleaseResult:
        if self._ended.get(lease_id, ("", ""))[0] == "lease.released":
            return ReleaseResult(lease_id=lease_id, released=False)
        lease = self._owned(lease_id, secret)
        self._end_lease(lease, "lease.released", "released by its holder")
        return built(ReleaseResult, lease_id=lease_id, released=True)

    def revoke(self, lease_id: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise Refusal(
                "lease_not_found", f"no live lease {lease_id!r}: see `gcl leases`", "lease_id"
            )
        self._end_lease(lease, "lease.revoked", "revoked by an operator")

    def _owned(self, lease_id: str, secret: str) -> Lease:
        """The live lease, if `secret` is the one it was granted with."""
        lease = self._live(lease_id)
        if not lease.owned_by(secret):
            raise _not_yours(f"lease {lease_id}")
        return lease

    def _live(self, lease_id: str) -> Lease:
        lease = self.leases.get(lease_id)
        if lease is not None:
            return lease
        ended = self._ended.get(lease_id)
        if ended is not None:
            kind, reason = ended
            raise Refusal("lease_lost", f"lease {lease_id} is gone: {kind[6:]} ({reason})")
        raise Refusal(
            "lease_not_found", f"the coordinator does not know lease {lease_id}", "lease_id"
        )

    def _end_lease(self, lease: Lease, kind: EventKind, reason: str) -> None:
        self._detach(lease, self.clock.now())
        self._ended[lease.lease_id] = (kind, reason)
        _trim(self._ended)
        self._emit(kind, lease.names, lease=lease, reason=reason)
        self._tell_lost(lease, kind, reason)
        self._pump(lease.names)

    def _tell_lost(self, lease: Lease, kind: EventKind, reason: str) -> None:
        """A lease ended without its holder asking: push it a notice now, not at its next
        renewal (which stays the safety net)."""
        if lease.notify and kind in ("lease.expired", "lease.revoked"):
            notice = LostNotice(
                request_id=lease.request_id,
                lease_id=lease.lease_id,
                names=list(lease.names),
                kind=kind,
                reason=reason,
                message=f"lease {lease.lease_id} is gone: {kind[6:]} ({reason})",
            )
            self.changes.notices.append((lease.notify, notice))

    # --- waiting ----------------------------------------------------------------------------

    def keepalive(self, request_id: str, secret: str) -> WaitStatus:
        """A waiter says it is still there; also how it learns of a grant whose notice was lost."""
        waiter = self.queues.get(request_id)
        if waiter is not None:
            _check_secret(waiter.request.secret, secret, request_id)
            self._keep_waiting(waiter, self.clock.now())
            return WaitStatus(status="queued", request_id=request_id)
        lease_id = self.lease_by_request.get(request_id)
        if lease_id is not None:
            lease = self.leases[lease_id]
            if not lease.owned_by(secret):
                raise _not_yours(f"request {request_id}")
            return WaitStatus(
                status="granted", request_id=request_id, lease=lease.info(self.clock.now())
            )
        return WaitStatus(status="unknown", request_id=request_id)

    def withdraw(self, request_id: str, secret: str, reason: str) -> WaitStatus:
        """Leave the queue; if the grant raced the withdrawal, give the slots straight back."""
        waiter = self.queues.get(request_id)
        if waiter is not None:
            _check_secret(waiter.request.secret, secret, request_id)
            kind: EventKind = "waiter.timed_out" if reason == "timeout" else "waiter.withdrawn"
            self._drop_waiter(waiter, kind, f"the waiter gave up ({reason})")
            return WaitStatus(status="withdrawn", request_id=request_id)
        lease_id = self.lease_by_request.get(request_id)
        if lease_id is not None:
            lease = self.leases[lease_id]
            if not lease.owned_by(secret):
                raise _not_yours(f"request {request_id}")
            self._end_lease(lease, "lease.released", f"waiter gave up ({reason})")
            return WaitStatus(status="released", request_id=request_id)
        return WaitStatus(status="unknown", request_id=request_id)

    def _drop_waiter(self, waiter: Waiter, kind: EventKind, reason: str) -> None:
        self._unqueue(waiter)
        self._emit(
            kind,
            waiter.names,
            request_id=waiter.request_id,
            holder=waiter.request.holder,
            reason=reason,
        )
        self._pump(waiter.names)

    def _reject_waiter(self, waiter: Waiter, code: str, message: str) -> None:
        """Tell a waiter it failed. The caller pumps its other queues once it is consistent."""
        self._unqueue(waiter)
        self._emit(
            "waiter.rejected",
            waiter.names,
            request_id=waiter.request_id,
            holder=waiter.request.holder,
            reason=message,
        )
        self._notify(
            waiter,
            WaitNotice(
                request_id=waiter.request_id,
                status="failed",
                error_code=code,
                error_message=message,
            ),
        )

    def _unqueue(self, waiter: Waiter) -> None:
        """Take a waiter out of every queue it stands in: admitted, dropped or rejected."""
        if waiter.request_id not in self.queues:
            return
        self.queues.remove(waiter)
        key = _holder_key(waiter.request.holder)
        left = self._waiting_holders.pop(key, 1) - 1
        if left > 0:
            self._waiting_holders[key] = left
        self._compact_schedules()

    def _notify(self, waiter: Waiter, notice: WaitNotice) -> None:
        if waiter.notify:
            self.changes.notices.append((waiter.notify, notice))

    # --- administering ----------------------------------------------------------------------

    def create_limit(self, spec: LimitCreate) -> LimitInfo:
        if spec.name in self.limits:
            raise Refusal(
                "limit_exists",
                f"limit {spec.name!r} already exists: use `gcl update {spec.name}` to change it",
                "name",
            )
        self._check_limit_room("name")
        wall = self.clock.wall()
        limit = Limit(
            spec.name,
            spec.limit,
            spec.active,
            spec.slot_decay_per_second,
            created_at=wall,
            updated_at=wall,
            fencing_token=_token_floor(wall),
            is_template=naming.TEMPLATE_FIELD in spec.name,
        )
        self.limits[spec.name] = limit
        if limit.is_template:
            self._templates.add(spec.name)
        self._dirty(limit)
        self._emit("limit.created", [spec.name])
        return self.limit_info(spec.name)

    def _instantiate(self, name: str) -> None:
        """First use of `gpu:gpu-7` under a `gpu:{worker_id}` template creates its own limit."""
        template = self._template_for(name)
        if template is None:
            return
        self._check_limit_room("names")
        if self._instances.get(template.name, 0) >= self.bounds.max_instances_per_template:
            raise self.bounds.refuse(
                "max_instances_per_template",
                f"the limits created from template {template.name!r}",
                "names",
                "delete those no longer used (`gcl ls`)",
            )
        wall = self.clock.wall()
        limit = Limit(
            name,
            template.limit,
            template.active,
            template.slot_decay_per_second,
            created_at=wall,
            updated_at=wall,
            fencing_token=_token_floor(wall),
            template=template.name,
        )
        self.limits[name] = limit
        self._instances[template.name] = self._instances.get(template.name, 0) + 1
        self._dirty(limit)
        self._emit("limit.created", [name], reason=f"from template {template.name!r}")

    def _check_limit_room(self, field: str) -> None:
        if len(self.limits) >= self.bounds.max_limits:
            raise self.bounds.refuse(
                "max_limits", "the coordinator's limits", field, "delete unused ones (`gcl ls`)"
            )

    def _template_for(self, name: str) -> Limit | None:
        for template in sorted(self._templates):
            if naming.template_matches(template, name):
                return self.limits[template]
        return None

    def update_limit(self, update: LimitUpdate) -> LimitInfo:
        limit = self._limit(update.name)
        now = self.clock.now()
        limit.settle(now)
        if update.limit is not None:
            limit.limit = update.limit
        if update.active is not None:
            limit.active = update.active
        if update.slot_decay_per_second is not None:
            limit.slot_decay_per_second = update.slot_decay_per_second
        limit.updated_at = self.clock.wall()
        self._dirty(limit)
        self._emit("limit.updated", [limit.name])
        self._reject_misfits(limit)
        self._pump([limit.name])
        return self.limit_info(limit.name)

    def _reject_misfits(self, limit: Limit) -> None:
        """Waiters that can no longer ever fit are told now instead of waiting for ever;
        whoever stood behind them in their other queues may now go in."""
        touched: list[str] = []
        for waiter in self.queues.queue(limit.name):
            try:
                self._check_fits(limit, waiter.request)
            except Refusal as refusal:
                self._reject_waiter(waiter, refusal.code, refusal.message)
                touched.extend(waiter.names)
        self._pump(touched)

    def delete_limit(self, name: str) -> int:
        """Delete a limit; its holders lose their leases, its waiters stop waiting on it.

        Two passes: first no waiter names the limit any more, then queues are pumped, so no
        admission ever looks at a limit that is half gone.
        """
        limit = self._limit(name)
        del self.limits[name]
        self._templates.discard(name)
        self._forget_instance(limit)
        self._decay_blocked.discard(name)
        touched: list[str] = []
        for waiter in self.queues.queue(name):
            touched.extend(self._forget_name(waiter, name))
        holders = [self.leases[i] for i in sorted(limit.lease_ids)]
        for lease in holders:
            self._end_lease(lease, "lease.revoked", f"limit {name!r} was deleted")
        self._pump([n for n in touched if n in self.limits])
        self.changes.put_limit(name, None)
        self._emit("limit.deleted", [name], limits=[])
        return len(holders)

    def _forget_instance(self, limit: Limit) -> None:
        """Keep the per-template counts true when an instance or a template goes."""
        if limit.template is not None and limit.template in self._instances:
            left = self._instances.pop(limit.template) - 1
            if left > 0:
                self._instances[limit.template] = left
        if limit.is_template:
            self._instances.pop(limit.name, None)
            for other in self.limits.values():
                if other.template == limit.name:
                    other.template = None

    def _forget_name(self, waiter: Waiter, name: str) -> list[str]:
        """Take a deleted limit off a waiter; return the queues it still stands in."""
        if waiter.request.strict:
            self._reject_waiter(waiter, "limit_not_found", f"limit {name!r} was deleted")
            return [n for n in waiter.names if n != name]
        self.queues.drop_from(name, waiter)
        waiter.names.remove(name)
        waiter.missing.append(name)
        if not waiter.names:
            self._unqueue(waiter)
            notice = WaitNotice(
                request_id=waiter.request_id, status="granted", missing=waiter.missing
            )
            self._notify(waiter, notice)
        return list(waiter.names)

    # --- reading ----------------------------------------------------------------------------

    def _limit(self, name: str) -> Limit:
        limit = self.limits.get(name)
        if limit is None:
            raise Refusal("limit_not_found", f"no limit named {name!r}: see `gcl ls`", "name")
        return limit

    def limit_info(self, name: str) -> LimitInfo:
        limit = self._limit(name)
        return limit.info(self.clock.now(), self.queues.depth(name))

    def list_limits(self, pattern: str | None = None) -> list[LimitInfo]:
        return [
            self.limit_info(name)
            for name in sorted(self.limits)
            if pattern is None or naming.matches(name, pattern)
        ]

    def page_limits(self, pattern: str | None, size: int, cursor: str | None) -> LimitList:
        """Limits sorted by name, `size` at most, after the cursor's name."""
        found = self.cursors.read(cursor, "n")
        after = found[1] if found else None
        names = (
            n
            for n in self.limits
            if (after is None or n > after) and (pattern is None or naming.matches(n, pattern))
        )
        chosen = heapq.nsmallest(size + 1, names)  # O(limits · log size), no full sort
        page = chosen[:size]
        following = self.cursors.make("n", page[-1]) if len(chosen) > size else None
        return LimitList(limits=[self.limit_info(n) for n in page], next_cursor=following)

    def page_leases(self, name: str | None, size: int, cursor: str | None) -> LeaseList:
        """Live leases in grant order (oldest first), on all limits or on one."""
        found = self.cursors.read_key(cursor, "l")
        after = found[1] if found else None
        chosen = self._lease_page(name, after, size + 1)
        page = chosen[:size]
        following = self.cursors.make("l", page[-1][0]) if len(chosen) > size else None
        now = self.clock.now()
        return LeaseList(leases=[lease.info(now) for _, lease in page], next_cursor=following)

    def _lease_page(self, name: str | None, after: int | None, count: int) -> list[Keyed]:
        if name is None:
            return self.leases.after(after, count)  # O(log leases)
        keyed = ((self.leases.key(i), i) for i in self._limit(name).lease_ids)
        if after is not None:
            keyed = ((k, i) for k, i in keyed if k > after)
        # O(leases on the limit), which max_leases_per_limit bounds
        return [(k, self.leases[i]) for k, i in heapq.nsmallest(count, keyed)]

    def detail(self, name: str, size: int = DEFAULT_PAGE, cursor: str | None = None) -> LimitDetail:
        """The limit's figures, then one page of its holders (oldest first) followed by its
        queue (in order, with positions): holders first, then waiters, `size` in all."""
        limit = self._limit(name)
        now = self.clock.now()
        kind, after = self.cursors.read_key(cursor, "hw") or ("h", None)
        holders: list[Keyed] = []
        following = None
        if kind == "h":
            holders = self._lease_page(name, after, size + 1)
            if len(holders) > size:
                holders = holders[:size]
                following = self.cursors.make("h", holders[-1][0])
            kind, after, size = "w", None, size - len(holders)
        waiters: list[tuple[int, int, Waiter]] = []
        if following is None and size == 0 and self.queues.depth(name):
            following = self.cursors.make("w", "")
        elif following is None:
            waiters = self.queues.page(name, after, size + 1)
            if len(waiters) > size:
                waiters = waiters[:size]
                following = self.cursors.make("w", waiters[-1][0])
        return LimitDetail(
            limit=limit.info(now, self.queues.depth(name)),
            holders=[lease.info(now) for _, lease in holders],
            waiters=[waiter.info(now, position) for _, position, waiter in waiters],
            next_cursor=following,
        )

    def list_leases(self, name: str | None = None) -> list[LeaseInfo]:
        now = self.clock.now()
        ids = self._limit(name).lease_ids if name is not None else self.leases.keys()
        leases = sorted((self.leases[i] for i in ids), key=lambda x: x.granted_mono)
        return [lease.info(now) for lease in leases]

    # --- restoring --------------------------------------------------------------------------

    def restore(self, limits: Iterable[Limit], leases: Iterable[Lease]) -> None:
        """Load durable state after a restart. Leases get a fresh TTL from now.

        A stored lease naming a limit that no longer exists (the database was edited by hand)
        is dropped and its row deleted, rather than half-restored.
        """
        now = self.clock.now()
        for limit in limits:
            limit.decay_at = now
            limit.held = 0
            limit.lease_ids = set()
            self.limits[limit.name] = limit
            if limit.is_template:
                self._templates.add(limit.name)
        self._count_instances()
        orphans = []
        for lease in leases:
            if not all(name in self.limits for name in lease.names):
                orphans.append(lease.lease_id)
                continue
            lease.granted_mono = now
            lease.expires_at = now + (self._left(lease) if lease.long_lived else lease.ttl)
            self._attach(lease)
        self.changes = Changes()
        for lease_id in orphans:
            self.changes.remove_lease(lease_id)

    def _left(self, lease: Lease) -> float:
        """What remains of a lease nobody renews: a fresh ttl would stretch it at each restart."""
        return max(0.0, lease.wall_expiry() - self.clock.wall())

    def _count_instances(self) -> None:
        """After a restart, credit each limit to the template that would have created it."""
        if not self._templates:
            return
        templates = [self.limits[t] for t in sorted(self._templates)]
        for limit in self.limits.values():
            if limit.is_template:
                continue
            for template in templates:
                if naming.template_matches(template.name, limit.name):
                    limit.template = template.name
                    self._instances[template.name] = self._instances.get(template.name, 0) + 1
                    break

    # --- bookkeeping ------------------------------------------------------------------------

    def _dirty(self, limit: Limit) -> None:
        self.changes.put_limit(limit.name, limit)  # the service snapshots it at hand-off

    def _emit(
        self,
        kind: EventKind,
        names: list[str],
        *,
        lease: Lease | None = None,
        request_id: str | None = None,
        holder: Holder | None = None,
        reason: str | None = None,
        limits: list[LimitInfo] | None = None,
    ) -> None:
        now = self.clock.now()
        if limits is None:
            limits = [
                self.limits[n].info(now, self.queues.depth(n)) for n in names if n in self.limits
            ]
        self.changes.events.append(
            built(  # trusted values (kind is typed): skip re-validation
                Event,
                v=PROTOCOL_VERSION,
                kind=kind,
                at=self.clock.wall(),
                names=list(names),
                lease_id=lease.lease_id if lease else None,
                request_id=lease.request_id if lease else request_id,
                holder=lease.holder if lease else holder,
                occupy=lease.occupy if lease else None,
                reason=reason,
                actor=None,
                long_lived=True if lease and lease.long_lived else None,
                limits=limits,
            )
        )


HolderKey = tuple[str, str, int]
Keyed = tuple[int, Lease]  # a lease with its arrival key (its place in grant order)


def new_lease_id() -> str:
    """128 random bits in hex: the shape of `uuid4().hex`, at a third of its cost."""
    return secrets.token_hex(16)


def _lease_id(lease: Lease) -> str:
    return lease.lease_id


def _holder_key(holder: Holder) -> HolderKey:
    """Who a waiter is, for its cap: the process (the label is only a description)."""
    return (holder.worker_id, holder.host, holder.pid)


def _token_floor(wall: float) -> int:
    """A new limit's first fencing token: the creation time in microseconds.

    Tokens must keep growing even when a limit is deleted and created again under the same
    name (a holder of the old one may still be about): starting from the clock guarantees it
    unless the old limit issued over a million grants per second of its life.
    """
    return int(wall * 1_000_000)


def _trim(memory: OrderedDict[str, Any]) -> None:
    while len(memory) > ENDED_MEMORY:
        memory.popitem(last=False)


def _same_request(lease: Lease, request: AcquireRequest) -> bool:
    """A re-send of the request that got this lease (not another request reusing its id)."""
    return (
        lease.owned_by(request.secret)
        and lease.occupy == request.occupy
        and lease.mode == request.mode
        and lease.ttl == request.lease_ttl
        and lease.long_lived == request.long_lived
        and set(lease.names) <= set(request.names)
    )


def _reused(request_id: str) -> Refusal:
    return Refusal(
        "invalid_request",
        f"request_id {request_id!r} is already used by another request: give every request "
        "its own id (re-send only the very same request)",
        "request_id",
    )


def _not_yours(what: str) -> Refusal:
    return Refusal(
        "forbidden",
        f"{what} was not made with this secret: only its holder can renew, release, keep "
        "alive or withdraw it (an operator can revoke it with `gcl revoke`)",
        "secret",
    )


def _check_secret(expected: str, given: str, request_id: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise _not_yours(f"request {request_id}")


def _busy_message(names: list[str]) -> str:
    return (
        f"no free slots on {', '.join(map(repr, names))} right now (timeout_seconds=0 "
        "tries once): retry later or pass a longer timeout_seconds"
    )
