"""Leases for clients that cannot renew: stored with what they need, across upgrades and
restarts, and ended by `gcl release` (tests/test_cli_worker.py drives the commands)."""

from __future__ import annotations

from sqlalchemy import text

from gcl.coordinator.changes import Changes
from gcl.coordinator.leases import Lease
from gcl.coordinator.store import SCHEMA_VERSION, Store
from gcl.protocol import Holder

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


def test_schema_2_is_upgraded_and_its_leases_are_ordinary(db_url: str) -> None:
    store = Store(db_url)
    store.open()
    changes = Changes()
    changes.add_lease(a_lease("old"))
    store.apply(changes)
    with store.engine.begin() as conn:  # back to what a schema-2 coordinator wrote
        conn.execute(text("ALTER TABLE gcl_leases DROP COLUMN notify"))
        conn.execute(text("ALTER TABLE gcl_leases DROP COLUMN long_lived"))
        conn.execute(text("UPDATE gcl_meta SET value = '2' WHERE key = 'schema'"))
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
