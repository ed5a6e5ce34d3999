"""Leases for clients that cannot renew: stored with what they need across upgrades and
restarts, and marked as such wherever leases are shown (tests/test_cli_worker.py drives
`gcl acquire` and `gcl release`, and the restart)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from gcl.cli import output
from gcl.cli.events import format_event
from gcl.coordinator.changes import Changes
from gcl.coordinator.leases import Lease
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.store import SCHEMA_VERSION, Store
from gcl.protocol import Event, Holder, LeaseInfo
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.tui.screens.detail import DetailScreen
from gcl.tui.widgets.event_log import describe
from tests.test_cli import gcl_sync

WEEK = 7 * 86_400.0


def a_lease(lease_id: str, **fields: object) -> Lease:
    values: dict[str, object] = {
        "lease_id": lease_id,
        "request_id": f"r-{lease_id}",
        "names": ["db"],
        "occupy": 1,
        "mode": "concurrency",
        "ttl": 30.0,
        "holder": Holder(worker_id="w"),
        "granted_at": 1_700_000_000.0,
        "granted_mono": 0.0,
        "expires_at": 0.0,
        "fencing_tokens": {"db": 1},
        "secret_hash": "ab" * 32,
        **fields,
    }
    return Lease(**values)  # type: ignore[arg-type]


def test_schema_3_is_upgraded_and_its_leases_are_ordinary(db_url: str) -> None:
    store = Store(db_url)
    store.open()
    changes = Changes()
    changes.add_lease(a_lease("old"))
    store.apply(changes)
    with store.engine.begin() as conn:  # back to what a schema-3 coordinator wrote
        conn.execute(text("ALTER TABLE gcl_leases DROP COLUMN notify"))
        conn.execute(text("ALTER TABLE gcl_leases DROP COLUMN long_lived"))
        conn.execute(text("UPDATE gcl_meta SET value = '3' WHERE key = 'schema'"))
    store.close()

    upgraded = Store(db_url)
    _, leases = upgraded.open()
    try:
        (old,) = leases
        assert (old.lease_id, old.notify, old.long_lived) == ("old", None, False)
        changes = Changes()
        changes.add_lease(a_lease("new", ttl=WEEK, long_lived=True, notify="_INBOX.x.y"))
        upgraded.apply(changes)
        with upgraded.engine.connect() as conn:
            version = conn.execute(text("SELECT value FROM gcl_meta WHERE key = 'schema'"))
            assert version.scalar() == str(SCHEMA_VERSION)
    finally:
        upgraded.close()

    again = Store(db_url)
    _, leases = again.open()
    again.close()
    new = next(lease for lease in leases if lease.lease_id == "new")
    assert (new.ttl, new.long_lived, new.notify) == (WEEK, True, "_INBOX.x.y")


# --- shown as such: gcl inspect, gcl leases, gcl events, the dashboard ---------------------


def long_lived_info(**fields: object) -> LeaseInfo:
    values: dict[str, object] = {
        "lease_id": "a" * 32,
        "request_id": "r",
        "names": ["db"],
        "occupy": 1,
        "mode": "concurrency",
        "ttl": 30 * 86_400.0,
        "holder": Holder(worker_id="cron", label="gcl acquire"),
        "granted_at": 1_700_000_000.0,
        "expires_in": 29 * 86_400.0 + 3600,
        "fencing_tokens": {"db": 7},
        "long_lived": True,
        **fields,
    }
    return LeaseInfo.model_validate(values)


def test_the_cli_and_the_dashboard_mark_a_long_lived_lease() -> None:
    assert output.expires(long_lived_info()) == "29d01h (long-lived)"
    assert output.expires(long_lived_info(long_lived=False, expires_in=29.0)) == "29s"
    cells = DetailScreen("db").holder_cells(long_lived_info(), 1_700_000_100.0, 0.0)
    assert "29d01h long-lived" in cells


def test_events_mark_a_long_lived_lease() -> None:
    event = Event(kind="lease.granted", at=1.0, names=["db"], lease_id="a" * 32, long_lived=True)
    assert "long-lived" in format_event(event)
    assert "long-lived" in describe(event).plain
    ordinary = event.model_copy(update={"long_lived": None})
    assert "long-lived" not in format_event(ordinary)
    assert "long-lived" not in describe(ordinary).plain


async def test_gcl_leases_and_inspect_show_it(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 2)
    script = await client.acquire("db", lease_ttl=WEEK, long_lived=True, label="nightly")
    async with client.concurrency("db"):
        listed = await asyncio.to_thread(gcl_sync, nats_server.url, "leases", "db")
        inspected = await asyncio.to_thread(gcl_sync, nats_server.url, "inspect", "db")
    for shown in (listed, inspected):
        assert shown.code == 0, shown.err
        rows = [line for line in shown.out.splitlines() if "nightly" in line]
        assert len(rows) == 1 and "(long-lived)" in rows[0]
        assert sum("(long-lived)" in line for line in shown.out.splitlines()) == 1
    await client.release(script)
