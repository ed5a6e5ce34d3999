"""Caps on a real coordinator: a request past one is refused as `over_capacity`, which the SDK
raises as `OverCapacity` naming the cap, its value and the setting; oversized payloads are
refused before parsing. (Each cap's rule is tested on the engine in test_engine_bounds.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest

from gcl.coordinator.nats_server import NatsServer
from gcl.protocol import Reply
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import OverCapacity, RequestError
from gcl.sdk.settings import ClientSettings
from tests.conftest import wait_until


async def test_sdk_raises_over_capacity_naming_the_cap(
    nats_server: NatsServer, start_coordinator: Callable[..., Any]
) -> None:
    await start_coordinator(max_waiters_per_limit=2, max_limits=2)
    settings = ClientSettings(nats_url=nats_server.url)
    async with AsyncAdminClient(settings) as admin, AsyncClient(settings) as client:
        await admin.create_limit("gpu", 1)
        held = await client.acquire("gpu")
        waiting = [asyncio.create_task(client.acquire("gpu", timeout_seconds=30)) for _ in "ab"]
        await wait_until(lambda: _waiters(admin, "gpu", 2), timeout=10)
        with pytest.raises(OverCapacity) as caught:
            await client.acquire("gpu", timeout_seconds=30)
        error = caught.value
        assert isinstance(error, RequestError) and error.code == "over_capacity"
        assert "2" in str(error) and "GCL_MAX_WAITERS_PER_LIMIT" in str(error)
        await admin.create_limit("db", 1)
        with pytest.raises(OverCapacity, match="GCL_MAX_LIMITS"):
            await admin.create_limit("third", 1)
        await client.release(held)
        for task in waiting:
            await client.release(await asyncio.wait_for(task, 10))


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


async def test_oversized_payload_is_refused_unread_naming_its_size(
    nats_server: NatsServer, start_coordinator: Callable[..., Any]
) -> None:
    await start_coordinator(max_request_bytes=2_000)
    nc = await nats.connect(nats_server.url)
    try:
        payload = b'{"name": "' + b"x" * 3_000 + b'", "limit": 1}'
        msg = await nc.request("gcl.admin.limit.create", payload, timeout=5)
        reply = Reply.model_validate_json(msg.data)
        assert not reply.ok and reply.error is not None
        assert reply.error.code == "invalid_request" and reply.error.field is None
        assert f"{len(payload):,} bytes" in reply.error.message
        assert "GCL_MAX_REQUEST_BYTES" in reply.error.message
        small = await nc.request("gcl.admin.limit.create", b'{"name": "ok", "limit": 1}', 5)
        assert Reply.model_validate_json(small.data).ok
    finally:
        await nc.close()
