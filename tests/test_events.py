"""Durable events: the JetStream stream, durable and replaying subscribers, and `gcl events`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner, Result

from gcl.cli.main import cli
from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.coordinator.service import Coordinator
from gcl.protocol import Event
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.events import events, iter_events, parse_duration, stream_name
from gcl.sdk.exceptions import GCLError, InvalidRequest
from gcl.sdk.settings import ClientSettings, NatsSettings
from tests.conftest import coordinator_settings, wait_until


async def _take(stream: AsyncIterator[Event], count: int, timeout: float = 10) -> list[Event]:
    got: list[Event] = []

    async def collect() -> None:
        async for event in stream:
            got.append(event)
            if len(got) == count:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


async def _cycle(client: AsyncClient, name: str, times: int) -> None:
    for _ in range(times):
        async with client.concurrency(name):
            pass


async def test_stream_is_created_with_the_configured_retention(
    nats_server: NatsServer, start_coordinator: Callable[..., Any]
):
    await start_coordinator(events_max_age_seconds=3600, events_max_bytes=1_000_000)
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info(stream_name("gcl"))
    finally:
        await nc.close()
    assert info.config.subjects == ["gcl.events.>"]
    assert info.config.max_age == pytest.approx(3600)
    assert info.config.max_bytes == 1_000_000


async def test_durable_subscriber_gets_what_it_missed_once(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
):
    settings = NatsSettings(nats_url=nats_server.url)
    await admin.create_limit("gpu:a", 1)
    wanted = (["lease.granted", "lease.released"], ["gpu:*"], settings)
    first = events(*wanted, durable="alerts", since=60)  # since: no race with the first grant
    async with contextlib.aclosing(first) as stream:
        reader = asyncio.create_task(_take(stream, 2))
        await _cycle(client, "gpu:a", 1)
        seen_before = await reader
    assert [e.kind for e in seen_before] == ["lease.granted", "lease.released"]

    await _cycle(client, "gpu:a", 3)  # while nobody listens
    await admin.create_limit("other", 1)
    await _cycle(client, "other", 1)  # filtered out by name

    again = events(*wanted, durable="alerts")
    async with contextlib.aclosing(again) as stream:
        missed = await _take(stream, 6)
        extra = asyncio.create_task(_take(stream, 1, timeout=1.5))
        with pytest.raises(TimeoutError):
            await extra  # nothing twice, nothing more
    assert [e.kind for e in missed] == ["lease.granted", "lease.released"] * 3
    assert len({e.lease_id for e in missed}) == 3
    assert not {e.lease_id for e in missed} & {e.lease_id for e in seen_before}


async def test_durable_stopped_mid_batch_hands_back_the_rest_at_once(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("batch", 1)
    await _cycle(client, "batch", 3)
    await wait_until(lambda: _stored(nats_server, 7))
    settings = NatsSettings(nats_url=nats_server.url)
    first = events(None, ["batch"], settings, durable="batcher", since=60)
    async with contextlib.aclosing(first) as stream:
        head = await _take(stream, 3)  # one fetch brought all 7; 4 were never shown
    async with contextlib.aclosing(events(None, ["batch"], settings, durable="batcher")) as stream:
        rest = await _take(stream, 4, timeout=10)  # not after the 30 s ack wait
    assert [e.kind for e in head + rest] == ["limit.created"] + [
        "lease.granted",
        "lease.released",
    ] * 3


async def test_since_replays_then_stops_when_caught_up(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("db", 2)
    await _cycle(client, "db", 2)
    settings = NatsSettings(nats_url=nats_server.url)
    await wait_until(lambda: _stored(nats_server, 6))
    got = [
        e
        async for e in events(
            ["lease.expired", "lease.granted"], None, settings, since=60, follow=False
        )
    ]
    assert [e.kind for e in got] == ["lease.granted", "lease.granted"]
    assert all(e.names == ["db"] for e in got)


async def _stored(server: NatsServer, at_least: int) -> bool:
    """The stream stores asynchronously: wait for it before replaying."""
    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().stream_info(stream_name("gcl"))
        return int(info.state.messages) >= at_least
    finally:
        await nc.close()


async def test_sync_iterator_replays_stored_events(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("sync", 1)
    await _cycle(client, "sync", 1)
    settings = NatsSettings(nats_url=nats_server.url)
    await wait_until(lambda: _stored(nats_server, 4))
    kinds = await asyncio.to_thread(
        lambda: [
            e.kind for e in iter_events(names=["sync"], settings=settings, since="1m", follow=False)
        ]
    )
    assert kinds == ["limit.created", "lease.granted", "lease.released"]


async def test_live_events_follow_without_jetstream(tmp_path: Path, sqlite_url: str, caplog):
    server = NatsServer(tmp_path / "plain", jetstream=False).start()
    try:
        coordinator = Coordinator(coordinator_settings(server, sqlite_url))
        with caplog.at_level(logging.WARNING, logger="gcl.coordinator"):
            await coordinator.start()
        try:
            assert "live only" in caplog.text and "nats-server -js" in caplog.text
            settings = ClientSettings(nats_url=server.url)
            live = events(["limit.created"], None, settings)
            async with contextlib.aclosing(live) as stream:
                reader = asyncio.create_task(_take(stream, 1))
                async with AsyncAdminClient(settings) as admin:
                    for i in range(50):  # until the subscription is surely in place
                        await admin.create_limit(f"plain-{i}", 1)
                        await asyncio.wait([reader], timeout=0.1)
                        if reader.done():
                            break
                assert (await reader)[0].names[0].startswith("plain-")
            with pytest.raises(GCLError, match="JetStream"):
                await anext(events(None, None, settings, since=60))
        finally:
            await coordinator.stop()
    finally:
        server.stop()


async def test_a_stream_that_could_not_be_set_up_is_set_up_once_jetstream_is_there(
    tmp_path: Path, sqlite_url: str, caplog
):
    """A coordinator that started before JetStream could take the stream (a cluster still
    forming, JetStream switched on later) keeps trying in the background: events are not
    live-only for ever."""
    plain = NatsServer(tmp_path / "nats", jetstream=False).start()
    coordinator = Coordinator(coordinator_settings(plain, sqlite_url))
    server: NatsServer | None = None
    try:
        await coordinator.start()
        plain.stop()  # the same port comes back with JetStream; the coordinator reconnects
        server = NatsServer(tmp_path / "nats", port=plain.port).start()
        with caplog.at_level(logging.WARNING, logger="gcl.coordinator"):
            await wait_until(lambda: "events are stored again" in caplog.text, timeout=30)
        async with AsyncAdminClient(ClientSettings(nats_url=server.url)) as admin:
            await admin.create_limit("kept", 1)
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().stream_info(stream_name("gcl"))
            assert info.state.messages >= 1  # limit.created, stored
        finally:
            await nc.close()
    finally:
        await coordinator.stop()
        plain.stop()
        if server is not None:
            server.stop()


async def test_durations_and_bad_arguments_are_explained():
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    with pytest.raises(InvalidRequest, match=r"e\.g\. 90s"):
        parse_duration("ten minutes")
    with pytest.raises(InvalidRequest, match="durable name"):
        await anext(events(durable="has.dot"))
    with pytest.raises(InvalidRequest, match="follow=False"):
        await anext(events(follow=False))


def _run(nats_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--nats", nats_url, *args], catch_exceptions=False)


async def test_cli_prints_recent_events_as_lines_and_json(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
):
    await admin.create_limit("gpu:x", 2)
    await _cycle(client, "gpu:x", 1)
    await wait_until(lambda: _stored(nats_server, 4))
    text = await asyncio.to_thread(_run, nats_server.url, "events", "--kind", "granted")
    assert text.exit_code == 0, text.output
    lines = text.output.strip().splitlines()
    assert len(lines) == 1 and "lease.granted" in lines[0] and "gpu:x 1/2" in lines[0]
    as_json = await asyncio.to_thread(
        _run, nats_server.url, "events", "--json", "--name", "gpu:*", "--since", "5m"
    )
    kinds = [json.loads(line)["kind"] for line in as_json.output.strip().splitlines()]
    assert kinds == ["limit.created", "lease.granted", "lease.released"]


async def test_cli_rejects_bad_kind_and_since(nats_server: NatsServer, coordinator: Coordinator):
    bad_kind = await asyncio.to_thread(_run, nats_server.url, "events", "--kind", "exploded")
    assert bad_kind.exit_code != 0 and "unknown event kind 'exploded'" in bad_kind.output
    bad_since = await asyncio.to_thread(_run, nats_server.url, "events", "--since", "soon")
    assert bad_since.exit_code != 0 and "not a duration" in bad_since.output


def test_cli_without_nats_exits_2():
    import subprocess
    import sys

    url = f"nats://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "gcl.cli", "--nats", url, "events"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2
    assert url in done.stderr and "gcl up" in done.stderr
