"""The worker's view with gcl's NATS roles on: a worker may ask why it waits, and is told of
its loss on its own inbox, with the operator who caused it."""

from __future__ import annotations

import asyncio

import pytest

from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import LeaseLost
from gcl.sdk.settings import ClientSettings
from gcl.sdk.waiting import Waiting
from tests.conftest import wait_until
from tests.support.secure import Secured, secured_coordinator_fixture, secured_fixture

__all__ = ["secured_coordinator_fixture", "secured_fixture"]  # the fixtures of this module


async def test_a_worker_asks_why_it_waits_and_hears_of_its_loss(
    secured: Secured, coordinator: Coordinator
) -> None:
    worker = secured.settings("worker", ClientSettings, wait_report_after=0.2)
    async with (
        AsyncAdminClient(secured.settings("operator")) as operator,
        AsyncClient(worker, worker_id="gpu-2") as holder,
        AsyncClient(worker, worker_id="gpu-3") as waiter,
    ):
        await operator.create_limit("gpu", 1)
        heard: list[Waiting] = []
        with pytest.raises(LeaseLost) as caught:
            async with holder.concurrency("gpu", lease_ttl=30, cancel_on_lost=True) as lease:
                queued = asyncio.create_task(waiter.acquire("gpu", on_wait=heard.append))
                await wait_until(lambda: heard, timeout=10)
                assert heard[0].holders["gpu"][0].startswith("gpu-2@")
                assert lease.lease_id is not None
                await operator.revoke_lease(lease.lease_id)
                await asyncio.sleep(30)
        assert caught.value.actor == "gcl-operator"
        granted = await asyncio.wait_for(queued, 10)  # the revoke freed the slot for it
        await waiter.release(granted)
