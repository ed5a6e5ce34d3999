"""Prometheus metrics of a coordinator, served over HTTP on the coordinator's own event loop.

Gauges (slots, occupancy, waiters, active, denials) are read from the engine at scrape time, so
they are the coordinator's truth at that instant. Counters and histograms are fed by events, after
they are durable and published; they start from zero when the coordinator starts, as Prometheus
counters do. The service's own figures (messages dropped under a flood, commit times, the
store's health) are plain numbers the coordinator keeps whether or not metrics are served
(`ServiceStats`), read at scrape time. The HTTP server runs on the event loop, not in a thread,
so a scrape never reads the engine while a step changes it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import Event, LimitInfo, StoreHealth
from gcl.sdk.exceptions import GCLError

log = logging.getLogger("gcl.coordinator")
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
HOLD_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 14_400)
MAX_TRACKED = 100_000
REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 16_384
ENDINGS = {"lease.released": "releases", "lease.expired": "expiries", "lease.revoked": "revokes"}
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class ServiceStats:
    """The service's own figures: plain numbers, changed on the event loop, read at scrape."""

    dropped: Tally[str] = field(default_factory=Tally)  # operation -> messages dropped unread
    rejected: Tally[tuple[str, str]] = field(default_factory=Tally)  # (operation, reason)
    commit_failures: int = 0
    commit_buckets: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    commit_sum: float = 0.0
    commit_count: int = 0
    nats_disconnects: int = 0
    leading: bool = False  # this coordinator serves (it holds the lead)
    epoch: int = 0  # its leader epoch: every takeover (failover) bumps it by one

    def observe_commit(self, seconds: float) -> None:
        self.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.commit_sum += seconds
        self.commit_count += 1


class ServiceCollector(Collector):
    """Flood drops, refusals before parsing, commit times and the store's health."""

    def __init__(self, stats: ServiceStats, health: Callable[[], StoreHealth]) -> None:
        self.stats = stats
        self.health = health

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

    def __init__(self, engine: Engine, service: Collector | None = None) -> None:
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
            self.registry.register(service)
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


class MetricsEndpoint:
    """A minimal HTTP server for GET /metrics; one request per connection."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            raise GCLError(
                f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror or exc}): "
                "pick another --metrics-port, or 0 to turn metrics off"
            ) from exc
        log.info("Prometheus metrics on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), REQUEST_TIMEOUT)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, content_type, body = self._respond(head)
            writer.write(_response(status, content_type, body, head.startswith(b"HEAD ")))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)

    def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        method = parts[0] if parts else b""
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET /metrics\n"
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition()
        if path == b"/":
            return "200 OK", "text/plain", b"gcl coordinator: metrics at /metrics\n"
        return "404 Not Found", "text/plain", b"not found: metrics are at /metrics\n"


def _response(status: str, content_type: str, body: bytes, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head_only else body)


async def start_metrics(
    engine: Engine,
    settings: CoordinatorSettings,
    observers: list[Callable[[Event], None]],
    service: Collector | None = None,
) -> MetricsEndpoint | None:
    """Serve metrics when a port is set, and feed them every event; None when turned off."""
    if not settings.metrics_port:
        return None
    metrics = Metrics(engine, service)
    endpoint = MetricsEndpoint(metrics, settings.metrics_host, settings.metrics_port)
    await endpoint.start()
    observers.append(metrics.observe)
    return endpoint
