"""The JetStream stream that keeps the coordinator's events for subscribers who were away.

The coordinator publishes events with plain core-NATS publishes; a stream bound to
`{prefix}.events.>` stores them as they pass, so publishing needs no change and a NATS without
JetStream still gets live events. Retention is by age and by size, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import Subjects
from gcl.sdk.events import stream_name

log = logging.getLogger("gcl.coordinator")
JS_TIMEOUT = 5.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # then every 30 s, for as long as it runs


def stream_config(settings: CoordinatorSettings, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=stream_name(settings.prefix),
        description=f"gcl events of prefix {settings.prefix!r}, kept for gcl events/alerts",
        subjects=[Subjects(settings.prefix).all_events],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.events_max_age_seconds,
        max_bytes=settings.events_max_bytes,
    )


def cluster_replicas(nc: NATS) -> int:
    """3 replicas when NATS is a cluster of 3 or more (losing a node loses no event), else 1."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, min(3, len(set(info.get("connect_urls") or []))))


async def keep_ensuring(nc: NATS, settings: CoordinatorSettings) -> None:
    """After a failed `ensure_stream`, try again with back-off until the stream is there: a
    NATS cluster still forming cannot place a stream yet ("no suitable peers"), and JetStream
    may be switched on later. Each try is bounded; the coordinator cancels this at stop."""
    attempt = 0
    while True:
        await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
        attempt += 1
        if nc.is_connected and await ensure_stream(nc, settings, quiet=True):
            log.warning("the event stream is set up now (try %d): events are stored again", attempt)
            return


async def ensure_stream(nc: NATS, settings: CoordinatorSettings, quiet: bool = False) -> bool:
    """Create or re-size the stream; on any failure warn (`quiet`: log at debug) and go on
    with live events only."""
    config = stream_config(settings, cluster_replicas(nc))
    js = nc.jetstream(timeout=JS_TIMEOUT)
    try:
        try:
            current = (await js.stream_info(config.name or "")).config
        except NotFoundError:
            await js.add_stream(config)
            log.info("created event stream %s (%s)", config.name, _limits(config))
            return True
        if current.num_replicas != config.num_replicas:
            config.num_replicas = current.num_replicas  # changing replicas is an operator's call
        if _differs(current, config):
            await js.update_stream(config)
            log.info("updated event stream %s (%s)", config.name, _limits(config))
        return True
    except Exception as exc:
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "events are live only, not stored: could not set up JetStream stream %s on %s "
            "(%s: %s). `gcl events --since` and durable subscribers need NATS with JetStream "
            "(`nats-server -js`; `gcl up` has it); retrying in the background.",
            config.name,
            settings.nats_url,
            type(exc).__name__,
            exc,
        )
        return False


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        sorted(current.subjects or []) != sorted(wanted.subjects or [])
        or current.max_bytes != wanted.max_bytes
        or abs((current.max_age or 0) - (wanted.max_age or 0)) > 0.001
    )


def _limits(config: StreamConfig) -> str:
    return f"max age {config.max_age:g}s, max {config.max_bytes} bytes"
