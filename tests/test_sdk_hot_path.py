"""The worker SDK's hot path (bench/sdk_cpu.py): what it skips per block must not change what
it sends or what it guarantees.

Acquire requests come from a template validated once per shape, releases from a JSON template,
replies are read without a model when they plainly say "released", and the renewer is not
woken for a block shorter than its lease's first renewal point.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.msg import Msg

from gcl.coordinator.service import Coordinator
from gcl.coordinator.service import _ok as coordinator_ok
from gcl.protocol import RELEASE, HeldLease, Holder, LeaseInfo, ReleaseResult
from gcl.sdk import AsyncAdminClient, AsyncClient, ClientSettings
from gcl.sdk.client import _confirmed, _held_json
from gcl.sdk.exceptions import InvalidRequest
from gcl.sdk.leases import Lease
from gcl.sdk.renewer import Renewer
from tests.conftest import wait_until


def test_acquire_requests_are_what_the_model_writes_with_a_fresh_id_and_secret() -> None:
    client = AsyncClient(ClientSettings(nats_url="nats://127.0.0.1:1"), label="hot")
    client._inbox = "_INBOX.hot.path"
    seen: set[str] = set()
    for _ in range(50):
        request, payload = client._request(["a:1", "b"], 2, None, True, 12.5, None, "concurrency")
        assert payload == request.model_dump_json().encode()
        assert request.model_copy() == type(request).model_validate_json(payload)
        assert len(request.secret) >= 32 and len(request.request_id) == 32
        seen.update((request.secret, request.request_id))
    assert len(seen) == 100  # every request its own id and secret
    assert len(client._templates) == 1
    other, _ = client._request(["a:1", "b"], 2, 0, True, 12.5, "x", "concurrency")
    assert not other.wait and other.holder.label == "x" and len(client._templates) == 2


def test_a_request_the_model_refuses_is_refused_every_time() -> None:
    client = AsyncClient(ClientSettings(nats_url="nats://127.0.0.1:1"))
    for _ in range(2):  # not cached: still refused the second time
        with pytest.raises(InvalidRequest):
            client._request(["a"], 1, None, False, 0.5, None, "concurrency")  # ttl < 1 s
    assert not client._templates


def test_release_json_is_what_the_model_writes() -> None:
    for lease_id in ("abc123", "x" * 64, "a.b:c-d_e"):
        secret = "s" * 32
        expected = HeldLease(lease_id=lease_id, secret=secret).model_dump_json().encode()
        assert _held_json(lease_id, secret) == expected
    with pytest.raises(ValueError):  # off the wire's rules: the model refuses it, as before
        _held_json('a"b', "s" * 32)


def test_only_a_plain_released_reply_is_read_without_the_model() -> None:
    lease_id = "lease-1"
    # As the coordinator writes it (else every release would take the slow path).
    assert _confirmed(coordinator_ok(ReleaseResult(lease_id=lease_id, released=True)), lease_id)
    for reply in (
        b'{"v":3,"ok":true,"result":{"lease_id":"lease-1","released":false}}',
        b'{"v":3,"ok":true,"result":{"lease_id":"lease-2","released":true}}',
        b'{"v":3,"ok":false,"error":{"code":"lease_lost","message":"gone"}}',
        b'{"v":3,"ok":true,"result":{"lease_id":"lease-1","released":"yes"}}',
        b"not json",
        b"",
    ):
        assert not _confirmed(reply, lease_id), reply


async def test_a_release_answered_with_nonsense_counts_as_a_loss(
    coordinator: Coordinator, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("hot:odd", 1)
    sub = coordinator._subs[coordinator.subjects.op("*")]
    handle: Any = sub._cb

    async def odd(msg: Msg) -> None:
        if msg.subject == coordinator.subjects.op(RELEASE.name):
            await msg.respond(b'{"v":3,"ok":true,"result":{"surprise":1}}')
            return
        await handle(msg)

    sub._cb = odd
    async with client.concurrency("hot:odd") as lease:
        pass
    await client.flush_releases()
    assert lease.lost and client.late_losses == 1


def _lease(ttl: float) -> Lease:
    info = LeaseInfo(
        lease_id="l1",
        request_id="r1",
        names=["a"],
        occupy=1,
        mode="concurrency",
        ttl=ttl,
        holder=Holder(),
        granted_at=0.0,
        expires_in=ttl,
        fencing_tokens={"a": 1},
    )
    return Lease(info, ["a"], [], "s" * 32)


async def test_short_blocks_do_not_wake_the_renewer() -> None:
    renewer = Renewer(ClientSettings(nats_url="nats://127.0.0.1:1"))
    wakes = 0
    call_soon = renewer._thread.call_soon

    def counted(callback: Any, *args: Any) -> None:
        nonlocal wakes
        wakes += 1
        call_soon(callback, *args)

    renewer._thread.call_soon = counted  # type: ignore[method-assign]
    try:
        for _ in range(3):  # the first wakes it; it then looks again in one period (10 s)
            lease = _lease(30)
            renewer.track(lease)
            renewer.untrack(lease)
            await asyncio.sleep(0.05)
        assert wakes == 1
        for _ in range(1000):
            lease = _lease(30)
            renewer.track(lease)
            renewer.untrack(lease)
        assert wakes == 1 and not renewer._tracked and not renewer._new
        short = _lease(1.5)  # due in 0.5 s, before the renewer would look: it must wake
        renewer.track(short)
        assert wakes == 2
        await wait_until(lambda: not renewer._new, timeout=2)
        renewer.untrack(short)
    finally:
        renewer._thread.call_soon = call_soon  # type: ignore[method-assign]
        renewer.close()


async def test_a_lease_held_past_a_look_is_renewed(
    client: AsyncClient, admin: AsyncAdminClient, coordinator: Coordinator
) -> None:
    """Leases tracked between two looks join the schedule at the next look, still in time."""
    await admin.create_limit("hot:long", 5)
    async with client.concurrency("hot:long", lease_ttl=30):  # sets a 10 s look period
        pass
    async with client.concurrency("hot:long", lease_ttl=1.5) as lease:
        assert lease.lease_id is not None
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # > 1.5 s ttl: alive only if renewed
            await asyncio.sleep(0.1)
        assert not lease.lost
        assert lease.lease_id in coordinator.engine.leases
