"""The Prometheus side of the coordinator's metrics: its registry, collectors and exposition.

Imported only when metrics are served (`--metrics-port`), so a coordinator without them does
not load prometheus_client. gcl.coordinator.metrics has the figures the service keeps either
way and the HTTP endpoint.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from gcl.coordinator.engine import Engine
from gcl.coordinator.metrics import COMMIT_BUCKETS, ServiceCollector
from gcl.protocol import Event, LimitInfo

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
HOLD_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 14_400)
MAX_TRACKED = 100_000
ENDINGS = {"lease.released": "releases", "lease.expired": "expiries", "lease.revoked": "revokes"}


class ServiceFamilies(Collector):
    """Flood drops, refusals before parsing, commit times and the store's health."""

    def __init__(self, source: ServiceCollector) -> None:
        self.stats = source.stats
        self.health = source.health

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        dropped = CounterMetricFamily(
            "gcl_messages_dropped",
            "Requests dropped unread because that subject's backlog was full (a flood)",
            labels=["operation"],
        )
        for operation, count in sorted(stats.dropped.items()):
            dropped.add_metric([operation], count)
        yield dropped
        rejected = CounterMetricFamily(
            "gcl_requests_rejected",
            "Requests refused before parsing: too large, or not a JSON object",
            labels=["operation", "reason"],
        )
        for (operation, reason), count in sorted(stats.rejected.items()):
            rejected.add_metric([operation, reason], count)
        yield rejected
        cumulative, buckets = 0, []
        for bound, count in zip((*COMMIT_BUCKETS, float("inf")), stats.commit_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily(
            "gcl_commit_seconds",
            "Time from a batch's first commit attempt to its success, retries included",
            buckets=buckets,
            sum_value=stats.commit_sum,
        )
        yield CounterMetricFamily(
            "gcl_commit_failures",
            "Commit attempts that failed (each is retried)",
            value=stats.commit_failures,
        )
        yield CounterMetricFamily(
            "gcl_nats_disconnects",
            "Times the coordinator's NATS connection was lost (a slow-consumer cut included)",
            value=stats.nats_disconnects,
        )
        yield GaugeMetricFamily(
            "gcl_leader",
            "1 while this coordinator leads (serves), 0 once it stepped down",
            value=1.0 if stats.leading else 0.0,
        )
        yield GaugeMetricFamily(
            "gcl_leader_epoch",
            "The epoch this coordinator leads in: each takeover bumps it, so its increase is the "
            "number of failovers",
            value=float(stats.epoch),
        )
        health = self.health()
        yield GaugeMetricFamily(
            "gcl_store_healthy",
            "1 while every change commits within store_stall_seconds, else 0",
            value=1.0 if health.healthy else 0.0,
        )
        yield GaugeMetricFamily(
            "gcl_store_uncommitted_seconds",
            "How long the oldest change not yet committed has waited (0: all committed)",
            value=health.uncommitted_seconds,
        )


class LimitCollector(Collector):
    """Per-limit gauges from the engine's live figures; templates hold nothing and are left out."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        limits = [info for info in self.engine.list_limits() if not info.is_template]
        yield _gauge("gcl_limit_slots", "Slots of the limit (its size)", limits, lambda i: i.limit)
        yield _gauge(
            "gcl_limit_slots_occupied",
            "Slots occupied now: held by leases, plus the decaying level of rate limits",
            limits,
            lambda i: i.occupied,
        )
        yield _gauge(
            "gcl_limit_leases", "Live leases holding the limit", limits, lambda i: i.leases
        )
        yield _gauge(
            "gcl_limit_waiters", "Requests queued on the limit", limits, lambda i: i.waiters
        )
        yield _gauge(
            "gcl_limit_active",
            "1 if the limit is enforced, 0 if dry-run",
            limits,
            lambda i: i.active,
        )
        denials = CounterMetricFamily(
            "gcl_denials",
            "Acquires that had to wait or were refused (kept across restarts)",
            labels=["limit"],
        )
        for info in limits:
            denials.add_metric([info.name], info.denied)
        yield denials


def _gauge(
    name: str, doc: str, limits: list[LimitInfo], value: Callable[[LimitInfo], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["limit"])
    for info in limits:
        family.add_metric([info.name], float(value(info)))
    return family


class Metrics:
    """All metrics of one coordinator, in their own registry (tests run several coordinators)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine: Engine, service: ServiceCollector | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = {
            key: Counter(f"gcl_{key}", doc, ["limit"], registry=self.registry)
            for key, doc in (
                ("grants", "Leases granted (rate-limit grants included)"),
                ("releases", "Leases released by their holders"),
                ("expiries", "Leases that expired: the holder stopped renewing"),
                ("revokes", "Leases revoked by an operator or a limit deletion"),
                ("waiter_timeouts", "Waiters that gave up or went silent"),
            )
        }
        self.wait = Histogram(
            "gcl_wait_seconds",
            "Time from queueing to grant (0 when granted at once)",
            ["limit"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.hold = Histogram(
            "gcl_hold_seconds",
            "Time a lease was held, from grant to release, expiry or revoke",
            ["limit"],
            buckets=HOLD_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(LimitCollector(engine))
        if service is not None:
            self.registry.register(ServiceFamilies(service))
        self._queued_at: OrderedDict[str, float] = OrderedDict()
        self._granted_at: OrderedDict[str, float] = OrderedDict()

    def observe(self, event: Event) -> None:
        """Called by the coordinator for every event once it is durable and published."""
        kind = event.kind
        if kind == "waiter.queued" and event.request_id:
            _remember(self._queued_at, event.request_id, event.at)
        elif kind == "lease.granted":
            self._granted(event)
        elif kind in ENDINGS:
            self._ended(event, ENDINGS[kind])
        elif kind in ("waiter.timed_out", "waiter.withdrawn", "waiter.rejected"):
            self._left(event)
        elif kind == "limit.deleted":
            self._forget(event.names)

    def _granted(self, event: Event) -> None:
        queued = self._queued_at.pop(event.request_id or "", None)
        waited = max(0.0, event.at - queued) if queued is not None else 0.0
        if event.lease_id:
            _remember(self._granted_at, event.lease_id, event.at)
        for name in event.names:
            self.counters["grants"].labels(name).inc()
            self.wait.labels(name).observe(waited)

    def _ended(self, event: Event, counter: str) -> None:
        granted = self._granted_at.pop(event.lease_id or "", None)
        for name in event.names:
            self.counters[counter].labels(name).inc()
            if granted is not None:
                self.hold.labels(name).observe(max(0.0, event.at - granted))

    def _left(self, event: Event) -> None:
        self._queued_at.pop(event.request_id or "", None)
        if event.kind == "waiter.timed_out":
            for name in event.names:
                self.counters["waiter_timeouts"].labels(name).inc()

    def _forget(self, names: list[str]) -> None:
        """A deleted limit's series go too, so per-worker limits do not pile up for ever."""
        for name in names:
            for metric in (*self.counters.values(), self.wait, self.hold):
                with contextlib.suppress(KeyError):
                    metric.remove(name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _remember(memory: OrderedDict[str, float], key: str, at: float) -> None:
    """Bounded: rate grants never end, and a lost event must not grow memory for ever."""
    memory[key] = at
    while len(memory) > MAX_TRACKED:
        memory.popitem(last=False)
