"""With NATS roles on, the rest of gcl still works, each part with its own role's credential.

The example's workers run as the worker role, `gcl alert` and the read-only dashboard as the
observer, limits are made by the operator: what `gcl up` and compose.yaml set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gcl.alerting.rules import parse_rules
from gcl.alerting.runner import Alerter
from gcl.sdk import AsyncAdminClient, AsyncClient, ClientSettings
from gcl.sdk.discovery import credential_file
from gcl.tui.app import DashboardApp, Options
from gcl.tui.feed import Status
from gcl.tui.source import NatsSource
from tests.conftest import wait_until
from tests.support.secure import Secured, secured_coordinator_fixture, secured_fixture
from tests.test_alerts import Receiver, _crash, _recorder, _scenario_rules
from tests.test_example import run_example
from tests.test_tui import FAST, SIZE, cell

__all__ = ["secured_coordinator_fixture", "secured_fixture"]


@pytest.fixture
async def operator(secured: Secured, coordinator: object) -> AsyncIterator[AsyncAdminClient]:
    async with AsyncAdminClient(secured.settings("operator")) as admin:
        yield admin


@pytest.mark.slow
async def test_the_example_runs_as_the_worker_role(
    secured: Secured, operator: AsyncAdminClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    await operator.create_limit("gpu:{worker_id}", 2)
    monkeypatch.setenv("GCL_NATS_CREDENTIALS", str(credential_file("worker", secured.folder)))
    code, out, err = await run_example(
        "--nats", secured.url, "--workers", "gpu-1,gpu-2", "--runs", "3",
        "--download", "0.3", "--infer", "0.3", "--save", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["failed_runs"] == 0
    for worker in ("gpu-1", "gpu-2"):  # instantiated from the template by a worker's acquire
        limit = (await operator.get_limit(f"gpu:{worker}")).limit
        assert (limit.limit, limit.held) == (2, 0)


async def test_alerts_run_as_the_observer_role(
    secured: Secured, operator: AsyncAdminClient, tmp_path: Path
):
    receiver = Receiver()
    receiver.thread.start()
    try:
        rules = parse_rules(_scenario_rules(receiver.url, _recorder(tmp_path / "script.jsonl")))
        for name in ("crash", "sat", "busy"):
            await operator.create_limit(name, 1)
        alerter = Alerter(rules, secured.settings("observer"), tick_seconds=0.1)
        ready = asyncio.Event()
        task = asyncio.create_task(alerter.run(ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            async with AsyncClient(secured.settings("worker", ClientSettings)) as worker:
                await _crash(worker)
            await wait_until(lambda: len(receiver.of("crashed")) >= 1, timeout=20)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert receiver.of("crashed")[0]["state"] == "firing"
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


async def test_the_read_only_dashboard_runs_as_the_observer_role(
    secured: Secured, operator: AsyncAdminClient
):
    await operator.create_limit("db", 3)
    settings = secured.settings("observer", request_timeout=2)
    app = DashboardApp(NatsSource(settings), Options(read_only=True, timing=FAST))
    async with app.run_test(size=SIZE):
        await wait_until(lambda: app.link.status is Status.CONNECTED, timeout=10)
        await wait_until(lambda: "db" in app.board.limits, timeout=10)
        assert cell(app, "db", "occupancy").endswith("0/3")
        await operator.update_limit("db", limit=5)  # a change made elsewhere shows up live
        await wait_until(lambda: app.board.limits["db"].limit == 5, timeout=10)
