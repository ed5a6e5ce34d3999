"""Per-worker templates: `gpu:{worker_id}` gives every worker its own limit on first use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest

from gcl.coordinator.nats_server import NatsServer
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import AcquireTimeout, LimitNotFound
from gcl.sdk.identity import per_worker
from gcl.sdk.leases import Lease
from tests.conftest import wait_until
from tests.test_cli import gcl

TEMPLATE = "gpu:{worker_id}"


async def queued(admin: AsyncAdminClient, name: str) -> bool:
    return (await admin.get_limit(name)).limit.waiters == 1


async def take(client: AsyncClient, monkeypatch: pytest.MonkeyPatch, worker: str) -> Lease:
    """Acquire one slot of this worker's own share, as a process with WORKER_ID=worker."""
    monkeypatch.setenv("WORKER_ID", worker)
    return await client.acquire(per_worker("gpu"), timeout_seconds=0, strict=True)


async def test_each_worker_gets_its_own_slots(
    client: AsyncClient, admin: AsyncAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await admin.create_limit(TEMPLATE, 2)
    held = [await take(client, monkeypatch, "gpu-1") for _ in range(2)]
    with pytest.raises(AcquireTimeout):  # gpu-1's two slots are taken ...
        await take(client, monkeypatch, "gpu-1")
    held += [await take(client, monkeypatch, "gpu-2") for _ in range(2)]  # ... not gpu-2's
    with pytest.raises(AcquireTimeout):
        await take(client, monkeypatch, "gpu-2")
    for worker in ("gpu-1", "gpu-2"):
        detail = await admin.get_limit(f"gpu:{worker}")
        assert (detail.limit.limit, detail.limit.held) == (2, 2)
        assert {lease.holder.worker_id for lease in detail.holders} == {worker}
    for lease in held:
        await client.release(lease)


async def test_a_worker_waits_for_its_own_slots_only(
    client: AsyncClient, admin: AsyncAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await admin.create_limit(TEMPLATE, 2)
    first = [await take(client, monkeypatch, "gpu-1") for _ in range(2)]
    monkeypatch.setenv("WORKER_ID", "gpu-1")
    waiting = asyncio.create_task(client.acquire(per_worker("gpu"), strict=True))
    await wait_until(lambda: queued(admin, "gpu:gpu-1"))
    second = [await take(client, monkeypatch, "gpu-2") for _ in range(2)]
    for lease in second:  # gpu-2 releasing frees nothing for gpu-1
        await client.release(lease)
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await client.release(first[0])
    lease = await asyncio.wait_for(waiting, 5)
    assert lease.names == ["gpu:gpu-1"]
    for held in (first[1], lease):
        await client.release(held)


async def test_instantiated_limit_is_listed_and_updated_on_its_own(
    nats_server: NatsServer,
    client: AsyncClient,
    admin: AsyncAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await gcl(nats_server, "create", TEMPLATE, "--limit", "2")
    assert created.code == 0 and "template" in created.out
    for worker in ("gpu-1", "gpu-2"):
        await client.release(await take(client, monkeypatch, worker))
    listed = await gcl(nats_server, "ls")
    rows = {line.split()[0]: line.split() for line in listed.out.splitlines()[2:] if line}
    assert rows["gpu:gpu-1"][1:4] == ["limit", "yes", "0/2"]
    assert rows[TEMPLATE][1] == "template"
    assert (await gcl(nats_server, "update", "gpu:gpu-1", "--limit", "3")).code == 0
    figures = {
        info["name"]: info for info in json.loads((await gcl(nats_server, "ls", "--json")).out)
    }
    assert figures["gpu:gpu-1"]["limit"] == 3
    assert figures["gpu:gpu-2"]["limit"] == 2 and figures[TEMPLATE]["limit"] == 2
    three = [await take(client, monkeypatch, "gpu-1") for _ in range(3)]
    for lease in three:
        await client.release(lease)


async def test_template_changes_apply_to_workers_seen_later(
    nats_server: NatsServer,
    client: AsyncClient,
    admin: AsyncAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await admin.create_limit(TEMPLATE, 2)
    await client.release(await take(client, monkeypatch, "gpu-1"))
    assert (await gcl(nats_server, "update", TEMPLATE, "--limit", "4")).code == 0
    await client.release(await take(client, monkeypatch, "gpu-7"))
    assert (await admin.get_limit("gpu:gpu-1")).limit.limit == 2
    assert (await admin.get_limit("gpu:gpu-7")).limit.limit == 4
    inspected = await gcl(nats_server, "inspect", TEMPLATE)
    assert re.search(r"slots per worker:\s+4\s", inspected.out)
    assert "gcl ls 'gpu:*'" in inspected.out


async def test_deleting_the_template_keeps_existing_worker_limits(
    nats_server: NatsServer,
    client: AsyncClient,
    admin: AsyncAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await admin.create_limit(TEMPLATE, 2)
    await client.release(await take(client, monkeypatch, "gpu-1"))
    deleted = await gcl(nats_server, "delete", TEMPLATE)
    assert deleted.code == 0, deleted.err
    assert (await admin.get_limit("gpu:gpu-1")).limit.limit == 2
    with pytest.raises(LimitNotFound):  # no template any more: a new worker has no limit
        await take(client, monkeypatch, "gpu-9")


async def test_the_template_itself_never_holds_slots(
    client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit(TEMPLATE, 1)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):  # the template name is not a limit: nothing is enforced on it
            lease = await stack.enter_async_context(client.concurrency(TEMPLATE))
            assert lease.missing == [TEMPLATE]
        assert (await admin.get_limit(TEMPLATE)).limit.held == 0
