"""Prometheus metrics of a coordinator, served over HTTP on the coordinator's own event loop.

Gauges (slots, occupancy, waiters, active, denials) are read from the engine at scrape time, so
they are the coordinator's truth at that instant. Counters and histograms are fed by events, after
they are durable and published; they start from zero when the coordinator starts, as Prometheus
counters do. The service's own figures (messages dropped under a flood, commit times, the
store's health) are plain numbers the coordinator keeps whether or not metrics are served
(`ServiceStats`), read at scrape time. The HTTP server runs on the event loop, not in a thread,
so a scrape never reads the engine while a step changes it.

prometheus_client is loaded only when metrics are served (gcl.coordinator.prometheus): it is a
few megabytes of an idle coordinator's memory otherwise.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gcl.coordinator.engine import Engine
from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import Event, StoreHealth
from gcl.sdk.exceptions import GCLError

if TYPE_CHECKING:
    from gcl.coordinator.prometheus import Metrics

log = logging.getLogger("gcl.coordinator")
REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 16_384
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


class ServiceCollector:
    """What the service's own metrics read at scrape time: its figures and the store's health.

    gcl.coordinator.prometheus turns them into metric families when metrics are served.
    """

    def __init__(self, stats: ServiceStats, health: Callable[[], StoreHealth]) -> None:
        self.stats = stats
        self.health = health


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
            return "200 OK", self.metrics.content_type, self.metrics.exposition()
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
    service: ServiceCollector | None = None,
) -> MetricsEndpoint | None:
    """Serve metrics when a port is set, and feed them every event; None when turned off."""
    if not settings.metrics_port:
        return None
    from gcl.coordinator.prometheus import Metrics

    metrics = Metrics(engine, service)
    endpoint = MetricsEndpoint(metrics, settings.metrics_host, settings.metrics_port)
    await endpoint.start()
    observers.append(metrics.observe)
    return endpoint
