"""A coordinator that wins the leader lock keeps it through a slow start, and one that is no
longer the leader never answers: not even a grant that holds nothing.

Found by the failover test: a coordinator took the lock, spent 5 s setting up the event stream
on a cluster that could not place it yet, and meanwhile PostgreSQL ended its silent lock session
and two others led in turn. It then served for 0.3 s from what it had loaded before the limit
existed, and told a worker that 'ha' was "not enforced": a grant without a slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gcl.coordinator import service as service_module
from gcl.coordinator.engine import Engine
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.protocol import AcquireRequest
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import CoordinatorUnavailable
from gcl.sdk.settings import ClientSettings
from tests.conftest import coordinator_settings, fresh_postgres
from tests.support.clock import FakeClock

SLOW_START = 3.0  # seconds: twice PostgreSQL's idle_session_timeout on the lock session


@pytest.mark.postgres
async def test_a_slow_start_keeps_the_lead_and_the_standby_waits(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = fresh_postgres()
    real_ensure = service_module.ensure_stream

    async def slow_stream(*args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(SLOW_START)  # a stream that takes long to place
        return await real_ensure(*args, **kwargs)

    monkeypatch.setattr(service_module, "ensure_stream", slow_stream)
    first = Coordinator(coordinator_settings(nats_server, db_url))
    standby = Coordinator(coordinator_settings(nats_server, db_url))
    starting = asyncio.create_task(first.start())
    await asyncio.sleep(0.5)  # `first` holds the lock and is in its slow start
    standing = asyncio.create_task(standby.start())
    try:
        await asyncio.wait_for(starting, SLOW_START + 10)
        assert first.leading and not standing.done(), "the standby took over a live leader"
        settings = ClientSettings(nats_url=nats_server.url, unavailable_timeout=10)
        async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
            await admin.create_limit("gpu", 1)
            async with client.concurrency("gpu") as lease:
                assert lease.fencing_token is not None
        await asyncio.sleep(2.0)  # past the session timeout again: the heartbeat keeps it
        assert first.leading and not standing.done()
    finally:
        await first.stop()
        await asyncio.wait_for(standing, 15)  # the standby takes over once `first` stops
        assert standby.leading
        await standby.stop()


async def test_a_stepped_down_coordinator_answers_nothing(
    nats_server: NatsServer, sqlite_url: str
) -> None:
    coordinator = Coordinator(coordinator_settings(nats_server, sqlite_url))
    await coordinator.start()
    try:
        settings = ClientSettings(
            nats_url=nats_server.url, request_timeout=0.5, unavailable_timeout=1.0
        )
        async with AsyncAdminClient(settings) as admin:
            await admin.ping()
            coordinator._step_down("test: another coordinator leads")
            with pytest.raises(CoordinatorUnavailable):
                await admin.ping()
    finally:
        await coordinator.stop()


def test_a_grant_of_only_unknown_names_waits_for_a_commit() -> None:
    """Not enforced, so nothing to write; but the commit checks the epoch: a deposed leader's
    "not enforced" never leaves."""
    engine = Engine(FakeClock(), keepalive_seconds=2.0)
    result = engine.acquire(
        AcquireRequest(secret="test-secret-0123456789", request_id="r", names=["nope"])
    )
    assert result.status == "granted" and result.lease is None and result.missing == ["nope"]
    changes = engine.take_changes()
    assert changes.confirm and changes.durable
