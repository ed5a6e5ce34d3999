"""Prometheus metrics: a scrape after a scripted workload matches the coordinator's state."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.coordinator.service import Coordinator
from gcl.protocol import ACQUIRE, AcquireRequest, Holder
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import GCLError
from gcl.sdk.settings import ClientSettings
from gcl.sdk.transport import Rpc
from tests.conftest import wait_until

Samples = dict[tuple[str, str], float]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


async def _scrape(coordinator: Coordinator) -> Samples:
    assert coordinator.metrics is not None
    status, text = await asyncio.to_thread(_get, coordinator.metrics.url)
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "limit" in sample.labels and "le" not in sample.labels:
                samples[(sample.name, sample.labels["limit"])] = sample.value
    return samples


async def _unrenewed_lease(client: AsyncClient, name: str) -> None:
    """A holder that never renews: what a crashed worker looks like to the coordinator."""
    rpc: Rpc = await client._ready()
    request = AcquireRequest(
        secret="test-secret-0123456789",
        request_id="crashed-1",
        names=[name],
        lease_ttl=1,
        holder=Holder(worker_id="w9"),
    )
    result = await rpc.call(ACQUIRE, request)
    assert result.status == "granted"


async def test_scrape_matches_state_after_workload(
    nats_server: NatsServer, start_coordinator: Callable[..., Any]
):
    coordinator: Coordinator = await start_coordinator(metrics_port=free_port())
    settings = ClientSettings(nats_url=nats_server.url)
    async with AsyncClient(settings) as client, AsyncAdminClient(settings) as admin:
        await admin.create_limit("a", 3)
        await admin.create_limit("b", 1)
        await admin.create_limit("gpu:{worker_id}", 2)
        for _ in range(3):
            async with client.concurrency("a"):
                pass
        await client.acquire("a", occupy=2)
        await _unrenewed_lease(client, "a")
        held_b = await client.acquire("b")
        waiter = asyncio.create_task(client.acquire("b"))
        await wait_until(lambda: _figure(admin, "b", "waiters", 1))
        await asyncio.sleep(0.2)  # a measurable wait
        await admin.revoke_lease(held_b.lease_id or "")
        await asyncio.wait_for(waiter, 10)
        await wait_until(lambda: _figure(admin, "a", "held", 2), timeout=15)  # expired
        truth = {info.name: info for info in await admin.list_limits()}
        samples = await _scrape(coordinator)

    for name in ("a", "b"):
        info = truth[name]
        assert samples[("gcl_limit_slots", name)] == info.limit
        assert samples[("gcl_limit_slots_occupied", name)] == pytest.approx(info.occupied)
        assert samples[("gcl_limit_leases", name)] == info.leases
        assert samples[("gcl_limit_waiters", name)] == info.waiters == 0
        assert samples[("gcl_limit_active", name)] == 1
        assert samples[("gcl_denials_total", name)] == info.denied
    assert truth["b"].denied == 1
    assert samples[("gcl_limit_slots_occupied", "a")] == 2
    assert samples[("gcl_grants_total", "a")] == 5
    assert samples[("gcl_releases_total", "a")] == 3
    assert samples[("gcl_expiries_total", "a")] == 1
    assert samples[("gcl_grants_total", "b")] == 2
    assert samples[("gcl_revokes_total", "b")] == 1
    assert samples[("gcl_wait_seconds_count", "a")] == 5
    assert samples[("gcl_wait_seconds_sum", "a")] == 0  # never queued
    assert samples[("gcl_wait_seconds_count", "b")] == 2
    assert samples[("gcl_wait_seconds_sum", "b")] >= 0.2
    assert samples[("gcl_hold_seconds_count", "a")] == 4  # 3 released + 1 expired
    assert samples[("gcl_hold_seconds_sum", "a")] >= 1.0  # the expired one held its ttl
    assert samples[("gcl_hold_seconds_count", "b")] == 1
    assert not any(label == "gpu:{worker_id}" for _, label in samples)


async def _figure(admin: AsyncAdminClient, name: str, field: str, value: int) -> bool:
    return getattr((await admin.get_limit(name)).limit, field) == value


async def test_deleted_limit_leaves_the_scrape(
    nats_server: NatsServer, start_coordinator: Callable[..., Any]
):
    coordinator: Coordinator = await start_coordinator(metrics_port=free_port())
    settings = ClientSettings(nats_url=nats_server.url)
    async with AsyncClient(settings) as client, AsyncAdminClient(settings) as admin:
        await admin.create_limit("gone", 1)
        async with client.concurrency("gone"):
            pass
        assert (await _scrape(coordinator))[("gcl_grants_total", "gone")] == 1
        await admin.delete_limit("gone")
        await wait_until(lambda: _no_series(coordinator, "gone"))


async def _no_series(coordinator: Coordinator, name: str) -> bool:
    return not any(label == name for _, label in await _scrape(coordinator))


async def test_other_paths_and_methods_are_refused(start_coordinator: Callable[..., Any]):
    coordinator: Coordinator = await start_coordinator(metrics_port=free_port())
    assert coordinator.metrics is not None
    base = coordinator.metrics.url.removesuffix("/metrics")
    assert (await asyncio.to_thread(_get, base + "/nope"))[0] == 404
    status, text = await asyncio.to_thread(_get, base + "/")
    assert status == 200 and "/metrics" in text
    post = urllib.request.Request(coordinator.metrics.url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError, match="405"):
        await asyncio.to_thread(urllib.request.urlopen, post, timeout=10)


async def test_metrics_off_by_default_and_a_taken_port_is_explained(
    start_coordinator: Callable[..., Any], tmp_path: Path
):
    plain: Coordinator = await start_coordinator()
    assert plain.metrics is None
    with_metrics: Coordinator = await start_coordinator(
        db_url=f"sqlite:///{tmp_path / 'b.db'}", metrics_port=free_port(), prefix="other"
    )
    assert with_metrics.metrics is not None
    with pytest.raises(GCLError, match="--metrics-port"):
        await start_coordinator(
            db_url=f"sqlite:///{tmp_path / 'c.db'}",
            metrics_port=with_metrics.metrics.port,
            prefix="third",
        )


async def test_leadership_is_scraped(start_coordinator: Callable[..., Any]):
    coordinator = await start_coordinator(metrics_port=free_port())
    assert coordinator.metrics is not None
    status, text = await asyncio.to_thread(_get, coordinator.metrics.url)
    assert status == 200
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["gcl_leader"] == 1.0
    assert values["gcl_leader_epoch"] == coordinator.store.epoch >= 1
