"""The store's guard rails: clear errors for a bad database, one writer at a time (a file
lock on SQLite; the leader epoch on PostgreSQL), tokens that never go backwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gcl.coordinator.changes import Changes
from gcl.coordinator.limits import Limit
from gcl.coordinator.service import CoordinatorConflict
from gcl.coordinator.settings import CoordinatorSettings
from gcl.coordinator.store import Deposed, Store, StoreLocked, StoreUnavailable


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://nobody@127.0.0.1:1/db", "Connection refused"),
        ("sqlite:////proc/no-such-dir/gcl.db", "No such file"),
        ("not a url", "unparsable"),
    ],
)
def test_a_bad_database_is_one_clear_error(url: str, says: str) -> None:
    with pytest.raises(StoreUnavailable, match=says) as caught:
        Store(url).open()
    assert "GCL_DB_URL" in str(caught.value)
    assert "nobody:" not in str(caught.value)


def test_two_stores_cannot_share_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gcl.db'}"
    first = Store(url)
    first.open()
    try:
        with pytest.raises(StoreLocked, match="another coordinator"):
            Store(url).open()
    finally:
        first.close()
    again = Store(url)  # released on close
    again.open()
    again.close()


def _grant_changes(name: str, token: int) -> Changes:
    changes = Changes()
    changes.put_limit(name, Limit(name=name, limit=1, fencing_token=token))
    return changes


@pytest.mark.postgres
def test_a_deposed_stores_commit_is_refused(postgres_url: str) -> None:
    """The fencing that makes failover safe: once a second store took the lead (a new epoch),
    the first one's commits fail, so it can never reveal a grant."""
    first = Store(postgres_url)
    first.open("a")
    second = Store(postgres_url)
    try:
        first.apply(_grant_changes("gpu", 10))  # leading: lands
        second.open("b")
        assert second.epoch == first.epoch + 1
        with pytest.raises(Deposed, match="another coordinator took the lead"):
            first.apply(_grant_changes("gpu", 11))
        limits, _ = second.load()
        assert [(x.name, x.fencing_token) for x in limits] == [("gpu", 10)]  # nothing slipped
        second.apply(_grant_changes("gpu", 12))
        assert second.leader()[:2] == (second.epoch, "b")
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_fencing_tokens_never_go_backwards_in_the_store(
    db: str, postgres_url_or_none: str | None, tmp_path: Path
) -> None:
    url = postgres_url_or_none if db == "postgres" else f"sqlite:///{tmp_path / 'g.db'}"
    assert url is not None
    store = Store(url)
    store.open("a")
    try:
        store.apply(_grant_changes("gpu", 20))
        store.apply(_grant_changes("gpu", 15))  # a stale snapshot must not roll it back
        limits, _ = store.load()
        assert limits[0].fencing_token == 20
    finally:
        store.close()


@pytest.fixture
def postgres_url_or_none(request: pytest.FixtureRequest) -> str | None:
    if "postgres" not in request.node.name:
        return None
    from tests.conftest import fresh_postgres

    return fresh_postgres()


async def test_a_second_coordinator_on_the_same_prefix_refuses_to_start(
    start_coordinator: Callable[..., Any], tmp_path: Path
) -> None:
    await start_coordinator()
    with pytest.raises(CoordinatorConflict, match="already serves gcl"):
        await start_coordinator(db_url=f"sqlite:///{tmp_path / 'other.db'}")


def _synchronous_of_commits(store: Store) -> int:
    """PRAGMA synchronous on the connection that commits (0 OFF, 1 NORMAL, 2 FULL)."""
    store.apply(Changes())  # opens the writer connection
    assert store._writer is not None
    cursor = store._writer.connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


@pytest.mark.parametrize(("env", "level"), [(None, 2), ("NORMAL", 1), ("full", 2)])
def test_sqlite_commits_are_durable_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, level: int
) -> None:
    """`gcl serve` and `gcl up` read CoordinatorSettings: synchronous=FULL (a commit survives a
    power cut) unless GCL_SQLITE_SYNCHRONOUS=NORMAL opts out."""
    if env is None:
        monkeypatch.delenv("GCL_SQLITE_SYNCHRONOUS", raising=False)
    else:
        monkeypatch.setenv("GCL_SQLITE_SYNCHRONOUS", env)
    settings = CoordinatorSettings(db_url=f"sqlite:///{tmp_path / 'gcl.db'}")
    store = Store(settings.db_url, settings.sqlite_synchronous)
    store.open()
    try:
        assert _synchronous_of_commits(store) == level
    finally:
        store.close()


# The DDL the SQLModel classes of releases up to 0.2 created, word for word: the Core tables
# that replaced them (so the coordinator no longer loads SQLAlchemy's ORM) must create the same.
SQLMODEL_DDL = [
    "CREATE TABLE gcl_leader ( id INTEGER NOT NULL, epoch BIGINT NOT NULL, coordinator_id "
    "VARCHAR(64) NOT NULL, since FLOAT NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE gcl_leases ( lease_id VARCHAR(64) NOT NULL, request_id VARCHAR(64) NOT NULL, "
    "names JSON NOT NULL, occupy INTEGER NOT NULL, mode VARCHAR(16) NOT NULL, ttl FLOAT NOT "
    "NULL, holder JSON NOT NULL, granted_at FLOAT NOT NULL, fencing_tokens JSON NOT NULL, "
    "secret_hash VARCHAR(64) NOT NULL, notify VARCHAR(255) NOT NULL, long_lived BOOLEAN NOT "
    "NULL, PRIMARY KEY (lease_id) )",
    "CREATE INDEX ix_gcl_leases_request_id ON gcl_leases (request_id)",
    'CREATE TABLE gcl_limits ( name VARCHAR(200) NOT NULL, "limit" BIGINT NOT NULL, active '
    "BOOLEAN NOT NULL, slot_decay_per_second FLOAT NOT NULL, created_at FLOAT NOT NULL, "
    "updated_at FLOAT NOT NULL, fencing_token BIGINT NOT NULL, denied BIGINT NOT NULL, "
    "hold_seconds_total FLOAT NOT NULL, hold_count BIGINT NOT NULL, decay_level FLOAT NOT NULL, "
    "is_template BOOLEAN NOT NULL, PRIMARY KEY (name) )",
    'CREATE TABLE gcl_meta ( "key" VARCHAR(64) NOT NULL, value VARCHAR(200) NOT NULL, '
    'PRIMARY KEY ("key") )',
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_tables_are_those_earlier_releases_created(dialect: str) -> None:
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from gcl.coordinator.store import METADATA

    compiler = sqlite.dialect() if dialect == "sqlite" else postgresql.dialect()
    ddl = []
    for table in METADATA.sorted_tables:
        ddl.append(" ".join(str(CreateTable(table).compile(dialect=compiler)).split()))
        ddl += [
            " ".join(str(CreateIndex(i).compile(dialect=compiler)).split()) for i in table.indexes
        ]
    expected = (
        SQLMODEL_DDL if dialect == "sqlite" else [s.replace('"key"', "key") for s in SQLMODEL_DDL]
    )
    assert ddl == expected


def test_a_lease_is_written_as_its_row_with_json_columns_encoded() -> None:
    """The writer's fast encoding binds every column, each equal to the row once decoded."""
    import json

    from gcl.coordinator.leases import Lease
    from gcl.coordinator.store import LEASES, lease_params, lease_row
    from gcl.protocol import Holder

    lease = Lease(
        lease_id="l1",
        request_id="r1",
        names=["gpu:w1", "db", "naïve"],
        occupy=2,
        mode="concurrency",
        ttl=30.0,
        holder=Holder(worker_id="w1", host="h", pid=7, label='quote " and \\'),
        granted_at=1.5,
        granted_mono=0.0,
        expires_at=31.5,
        fencing_tokens={"gpu:w1": 3, "db": 9, "naïve": 1},
        secret_hash="ab" * 32,
        notify="_INBOX.x.1",
        long_lived=True,
    )
    params = lease_params(lease)
    assert set(params) == {column.name for column in LEASES.columns}
    decoded = {
        k: json.loads(v) if k in {"names", "holder", "fencing_tokens"} else v
        for k, v in params.items()
    }
    assert decoded == lease_row(lease)


@pytest.mark.postgres
def test_a_takeover_ends_a_commit_the_old_leader_was_stopped_in(postgres_url: str) -> None:
    """An old leader stopped inside a commit holds the epoch row, and PostgreSQL's
    idle-in-transaction timeout does not end a session stopped inside a pipeline (psycopg's
    executemany): the next leader ends that transaction instead of waiting for it (a CI
    failover once waited 30 s for a SIGSTOPped leader), and the old write never lands."""
    import threading
    import time

    from gcl.coordinator.store import _Writer

    first = Store(postgres_url)
    first.open("a")
    second = Store(postgres_url)
    raw = first.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(_Writer(raw, "postgresql").fence, {"epoch": first.epoch})
        pipeline = raw.driver_connection.pipeline()  # as executemany runs, stopped half-way
        pipeline.__enter__()
        cursor.execute("UPDATE gcl_leader SET coordinator_id = 'stale' WHERE id = 1")
        raw.driver_connection.pgconn.flush()
        time.sleep(1.5)  # past idle_in_transaction_session_timeout (1 s): still holding the row

        taking = threading.Thread(target=second.open, args=("b",), daemon=True)
        taking.start()
        taking.join(10)
        assert not taking.is_alive(), "the takeover waited for the stopped leader's commit"
        assert second.epoch == first.epoch + 1
        assert second.leader()[:2] == (second.epoch, "b")  # the stale write never landed
    finally:
        raw.invalidate()  # its session was ended: do not return it to the pool
        first.close()
        second.close()
