"""Durable state: limits and live leases in SQL tables (SQLite file or PostgreSQL).

Only what survives a restart is written: limit settings and counters, and live leases. Renewals
are not written: restored leases get a fresh TTL at start-up, so an expiry time on disk would
never be read. Each `apply` is one transaction, so the disk always holds a prefix of history.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from pydantic_core import to_json
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from gcl.coordinator.changes import Changes
from gcl.coordinator.leases import Lease
from gcl.coordinator.limits import Limit
from gcl.protocol import Holder
from gcl.sdk.exceptions import GCLError, StorageError

log = logging.getLogger("gcl.coordinator.store")

# 2: gcl_leases.secret_hash; 3: gcl_leader (the epoch); 4: gcl_leases.notify, long_lived
SCHEMA_VERSION = 4


class StoreLocked(GCLError):
    """Another coordinator already owns this database: two would both grant the same slots."""


class Deposed(GCLError):
    """Another coordinator took over (a newer epoch): this one must stop serving at once."""


class StoreUnavailable(StorageError):
    """The database cannot be opened: wrong URL, server down, driver missing, no permission."""


# The tables, in SQLAlchemy Core: the coordinator only ever reads and writes them as rows, and
# declaring them as SQLModel classes loaded sqlmodel and SQLAlchemy's ORM into every coordinator
# for nothing but these definitions (~6 MB of an idle coordinator's ~64 MB RSS). The DDL is the
# one those classes created, so databases written by earlier releases open unchanged
# (tests/test_store.py compares it).
METADATA = MetaData()

LIMITS = Table(
    "gcl_limits",
    METADATA,
    Column("name", String(200), primary_key=True),
    Column("limit", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("slot_decay_per_second", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False, default=0.0),
    Column("fencing_token", BigInteger, nullable=False),
    Column("denied", BigInteger, nullable=False),
    Column("hold_seconds_total", Float, nullable=False, default=0.0),
    Column("hold_count", BigInteger, nullable=False),
    Column("decay_level", Float, nullable=False, default=0.0),
    Column("is_template", Boolean, nullable=False, default=False),
)

LEASES = Table(
    "gcl_leases",
    METADATA,
    Column("lease_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("names", JSON, nullable=False),
    Column("occupy", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("ttl", Float, nullable=False),
    Column("holder", JSON, nullable=False),
    Column("granted_at", Float, nullable=False),
    Column("fencing_tokens", JSON, nullable=False),
    Column("secret_hash", String(64), nullable=False, default=""),
    Column("notify", String(255), nullable=False, default=""),
    Column("long_lived", Boolean, nullable=False, default=False),
)

# One row: the epoch of the current leader, bumped by each takeover. Every write checks it, so
# a coordinator that lost the lead cannot commit (and so cannot reveal) anything.
LEADER = Table(
    "gcl_leader",
    METADATA,
    Column("id", Integer, primary_key=True, default=1),
    Column("epoch", BigInteger, nullable=False),
    Column("coordinator_id", String(64), nullable=False, default=""),
    Column("since", Float, nullable=False, default=0.0),
)

META = Table(
    "gcl_meta",
    METADATA,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)


class Store:
    """The database behind one coordinator. Blocking: the service calls it from a thread."""

    def __init__(self, url: str, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.epoch = 0  # this store's leadership epoch, taken by `open`
        self._lock_file: TextIO | None = None
        self._lock_conn: Connection | None = None
        self._writer: _Writer | None = None
        with self._explained():
            self.dialect = make_url(url).get_backend_name()
            self.engine = self._create_engine(url, sqlite_synchronous)

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        """Turn driver and SQLAlchemy errors into one line that says what to check."""
        try:
            yield
        except GCLError:
            raise
        except ModuleNotFoundError as exc:
            raise StoreUnavailable(
                f"the database driver {exc.name!r} is not installed: for PostgreSQL, "
                "pip install 'gcl[postgres]'"
            ) from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot open the database {safe_url(self.url)}: {_first_line(exc)}. "
                "Check --db / GCL_DB_URL (sqlite:///path/to/gcl.db or postgresql+psycopg://user@host/db)"
            ) from exc

    def _create_engine(self, url: str, synchronous: str) -> Engine:
        if self.dialect != "sqlite":
            # A leader paused or cut off in the middle of a commit holds the epoch row's lock
            # ("idle in transaction"): end such a session after 1 s, so a takeover never waits
            # on it for longer than the lock session's own 1.5 s timeout.
            options = "-c idle_in_transaction_session_timeout=1000"
            return create_engine(
                url, pool_pre_ping=True, pool_size=2, connect_args={"options": options}
            )
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(synchronous))
        return engine

    def open(self, coordinator_id: str = "") -> tuple[list[Limit], list[Lease]]:
        """Create tables if needed, take the lead (a new epoch, committed), then load.

        On SQLite a file lock also keeps a second coordinator out; on PostgreSQL the election
        (`election.py`) decides who calls this, and the epoch fences whoever it deposed."""
        with self._explained():
            self._lock()
            METADATA.create_all(self.engine)
            self._check_schema()
            self.epoch = self.take_lead(coordinator_id)
            return self.load()

    def take_lead(self, coordinator_id: str) -> int:
        """Bump the epoch in a committed transaction; from now on only our writes land."""
        if self.dialect == "postgresql":
            self._end_deposed_writes()
        leader = LEADER
        with self.engine.begin() as conn:
            if conn.execute(select(leader.c.epoch).where(leader.c.id == 1)).first() is None:
                conn.execute(leader.insert(), {"id": 1, "epoch": 0, "coordinator_id": ""})
            conn.execute(
                leader.update()
                .where(leader.c.id == 1)
                .values(epoch=leader.c.epoch + 1, coordinator_id=coordinator_id, since=time.time())
            )
            epoch = conn.execute(select(leader.c.epoch).where(leader.c.id == 1)).scalar_one()
        log.info("took the lead at epoch %d", epoch)
        return int(epoch)

    def _end_deposed_writes(self) -> None:
        """End the open write transactions of an earlier leader before bumping the epoch.

        Every commit starts by locking the epoch row, so an old leader stopped in the middle of
        one (paused, frozen, cut off) blocks the takeover's bump for as long as it stays so.
        PostgreSQL ends a session idle in a transaction after 1 s, but not one stopped inside a
        pipeline (psycopg's executemany), which it counts as mid-command: a failover waited
        for a SIGSTOPped leader until it was killed. Only a leader elected by the advisory lock
        calls this (on PostgreSQL the service opens the store after winning it), and an ended
        transaction reveals nothing: it had not committed, and its coordinator, fenced by the
        epoch, stops when it notices.
        """
        try:
            with self.engine.connect() as conn:
                ended = conn.execute(text(_END_DEPOSED_WRITES)).scalars().all()
                conn.commit()
        except SQLAlchemyError as exc:  # e.g. not allowed to end another role's session
            log.warning(
                "could not end an earlier leader's open transactions (%s): waiting for them",
                _first_line(exc),
            )
            return
        if ended:
            log.warning(
                "ended %d open transaction(s) of an earlier leader that held the epoch row",
                len(ended),
            )

    def leader(self) -> tuple[int, str, float]:
        """The current epoch, its coordinator and since when (for status and tests)."""
        leader = LEADER
        with self.engine.connect() as conn:
            row = conn.execute(
                select(leader.c.epoch, leader.c.coordinator_id, leader.c.since).where(
                    leader.c.id == 1
                )
            ).first()
        return (int(row[0]), str(row[1]), float(row[2])) if row else (0, "", 0.0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_conn is not None:
            self._lock_conn.close()
            self._lock_conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self.engine.dispose()

    def _lock(self) -> None:
        if self.dialect == "sqlite":
            self._lock_sqlite()

    def _lock_sqlite(self) -> None:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            return
        handle = open(f"{database}.lock", "w")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLocked(
                f"another coordinator is using {database}: stop it first, or give this one "
                "its own database with --db / GCL_DB_URL (SQLite allows one coordinator; for "
                "hot standbys use PostgreSQL)"
            ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _check_schema(self) -> None:
        with self.engine.begin() as conn:
            found = conn.execute(select(META.c.value).where(META.c.key == "schema")).scalar()
            if found is None:
                conn.execute(META.insert(), {"key": "schema", "value": str(SCHEMA_VERSION)})
            elif int(found) > SCHEMA_VERSION:
                raise GCLError(
                    f"database schema {found} is newer than this coordinator understands "
                    f"({SCHEMA_VERSION}): upgrade gcl"
                )
            elif int(found) < SCHEMA_VERSION:
                _migrate(conn, int(found))

    def load(self) -> tuple[list[Limit], list[Lease]]:
        """Everything durable. Rows are streamed and holders shared, so 100,000 leases load
        without holding every raw row beside every object."""
        holders: dict[str, Holder] = {}
        with self.engine.connect() as conn:
            limits = [_limit(r) for r in conn.execute(select(LIMITS)).mappings()]
            rows = conn.execution_options(yield_per=5_000).execute(select(LEASES))
            leases = [_lease(r, holders) for r in rows.mappings()]
        return limits, leases

    def apply(self, changes: Changes) -> None:
        """Write one batch in one transaction: all of it lands, or none of it."""
        if self._writer is None:
            self._writer = _Writer(self.engine.raw_connection(), self.dialect)
        try:
            self._writer.write(changes, self.epoch)
        except Exception:
            self._writer.close()  # a broken connection is replaced on the next try
            self._writer = None
            raise


class _Writer:
    """The hot write path on one DB-API connection, with SQL that SQLite and PostgreSQL share.

    Core defines and loads the tables; writing through SQLAlchemy's per-statement machinery
    cost ~7x a plain DB-API commit, which showed directly in acquire latency.
    """

    def __init__(self, connection: Any, dialect: str) -> None:
        self.connection = connection
        bind = "%({})s" if dialect == "postgresql" else ":{}"
        limit_cols = [column.name for column in LIMITS.columns]
        lease_cols = [column.name for column in LEASES.columns]
        greatest = "GREATEST" if dialect == "postgresql" else "MAX"
        updates = ", ".join(
            f'"{c}" = {greatest}(excluded."{c}", gcl_limits."{c}")'
            if c == "fencing_token"
            else f'"{c}" = excluded."{c}"'
            for c in limit_cols
            if c != "name"
        )
        self.upsert_limit = (
            f"INSERT INTO gcl_limits ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in limit_cols)}) "
            f"VALUES ({', '.join(bind.format(c) for c in limit_cols)}) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}"
        )
        self.delete_limit = f"DELETE FROM gcl_limits WHERE name = {bind.format('name')}"
        self.insert_lease = (
            f"INSERT INTO gcl_leases ({', '.join(lease_cols)}) "
            f"VALUES ({', '.join(bind.format(c) for c in lease_cols)})"
        )
        self.delete_lease = f"DELETE FROM gcl_leases WHERE lease_id = {bind.format('lease_id')}"
        # First in every transaction: still the leader? It also locks the row, so a takeover's
        # epoch bump waits for this commit and then everything after it fails.
        self.fence = (
            f"UPDATE gcl_leader SET epoch = epoch WHERE id = 1 AND epoch = {bind.format('epoch')}"
        )

    def write(self, changes: Changes, epoch: int) -> None:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.fence, {"epoch": epoch})
            if cursor.rowcount != 1:
                raise Deposed(
                    f"another coordinator took the lead (this one had epoch {epoch}): "
                    "stopping; a supervisor restarts it as a standby"
                )
            gone = [{"name": n} for n, limit in changes.limits.items() if limit is None]
            limits = [limit_row(limit) for limit in changes.limits.values() if limit is not None]
            removed = [{"lease_id": i} for i in changes.leases_removed]
            added = [lease_params(lease) for lease in changes.leases_added.values()]
            for sql, params in (
                (self.delete_limit, gone),
                (self.upsert_limit, limits),
                (self.delete_lease, removed),
                (self.insert_lease, added),
            ):
                if params:
                    cursor.executemany(sql, params)
            self.connection.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self.connection.rollback()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


# Sessions other than ours in a transaction that wrote the epoch row (every commit fences on
# it first): RowExclusiveLock on gcl_leader is held from that write until commit or rollback.
_END_DEPOSED_WRITES = """
SELECT pid FROM (
    SELECT DISTINCT pid FROM pg_locks
    WHERE locktype = 'relation' AND relation = to_regclass('gcl_leader')
      AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()
) AS writers
WHERE pg_terminate_backend(pid)
"""


def lease_params(lease: Lease) -> dict[str, Any]:
    """A lease's row as the writer binds it: `lease_row` with its JSON columns encoded, by
    pydantic-core's encoder (compact; a fifth of `json.dumps`'s time on the store thread)."""
    return {
        **_lease_scalars(lease),
        "names": to_json(lease.names).decode(),
        "holder": lease.holder.model_dump_json(),
        "fencing_tokens": to_json(lease.fencing_tokens).decode(),
    }


def limit_row(limit: Limit) -> dict[str, Any]:
    """The durable columns of a limit, snapshotted now (the object keeps changing)."""
    return {
        "name": limit.name,
        "limit": limit.limit,
        "active": limit.active,
        "slot_decay_per_second": limit.slot_decay_per_second,
        "created_at": limit.created_at,
        "updated_at": limit.updated_at,
        "fencing_token": limit.fencing_token,
        "denied": limit.denied,
        "hold_seconds_total": limit.hold_seconds_total,
        "hold_count": limit.hold_count,
        "decay_level": limit.decay_level,
        "is_template": limit.is_template,
    }


def lease_row(lease: Lease) -> dict[str, Any]:
    """The durable columns of a lease, its JSON columns as the values `load` reads back."""
    return {
        **_lease_scalars(lease),
        "names": list(lease.names),
        "holder": lease.holder.model_dump(),
        "fencing_tokens": dict(lease.fencing_tokens),
    }


def _lease_scalars(lease: Lease) -> dict[str, Any]:
    """A lease's columns other than its JSON ones, shared by `lease_row` and `lease_params`."""
    return {
        "lease_id": lease.lease_id,
        "request_id": lease.request_id,
        "occupy": lease.occupy,
        "mode": lease.mode,
        "ttl": lease.ttl,
        "granted_at": lease.granted_at,
        "secret_hash": lease.secret_hash,
        "notify": lease.notify or "",
        "long_lived": lease.long_lived,
    }


def _first_line(exc: BaseException) -> str:
    """A driver error's first line (they run to many), or its type if it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def safe_url(url: str) -> str:
    """The database URL without its password, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unparsable URL)"


def _sqlite_pragmas(synchronous: str) -> Any:
    """WAL lets readers run beside the writer. FULL (the default) fsyncs the WAL at every
    commit, so a commit survives a power cut; NORMAL fsyncs only at checkpoints: a commit
    survives kill -9 but the last ones may be lost with the machine."""
    mode = synchronous.upper() if synchronous.upper() in {"OFF", "NORMAL", "FULL"} else "FULL"

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={mode}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


def _limit(row: Any) -> Limit:
    return Limit(
        name=row["name"],
        limit=row["limit"],
        active=row["active"],
        slot_decay_per_second=row["slot_decay_per_second"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        fencing_token=row["fencing_token"],
        denied=row["denied"],
        hold_seconds_total=row["hold_seconds_total"],
        hold_count=row["hold_count"],
        decay_level=row["decay_level"],
        is_template=row["is_template"],
    )


def _lease(row: Any, holders: dict[str, Holder]) -> Lease:
    key = json.dumps(row["holder"], sort_keys=True)
    holder = holders.get(key)
    if holder is None:
        holder = holders[key] = Holder.model_validate(row["holder"])
    return Lease(
        lease_id=row["lease_id"],
        request_id=row["request_id"],
        names=list(row["names"]),
        occupy=row["occupy"],
        mode=row["mode"],
        ttl=row["ttl"],
        holder=holder,
        granted_at=row["granted_at"],
        granted_mono=0.0,
        expires_at=0.0,
        fencing_tokens={k: int(v) for k, v in row["fencing_tokens"].items()},
        secret_hash=row["secret_hash"] or "",
        notify=row["notify"] or None,
        long_lived=bool(row["long_lived"]),
    )


def _migrate(conn: Connection, found: int) -> None:
    """Bring an older schema up to date, in the same transaction as the version check."""
    if found < 3:
        pass  # gcl_leader is created by create_all; its row by the first take_lead
    if found < 2:
        # Leases granted before secrets existed keep an empty hash: nobody can renew them, so
        # they run out within one TTL of the upgrade (their v1 holders are refused anyway).
        conn.execute(text("ALTER TABLE gcl_leases ADD COLUMN secret_hash VARCHAR(64) DEFAULT ''"))
    if found < 4:
        # Where a lease's holder is told of its loss, and whether it is renewed at all.
        conn.execute(text("ALTER TABLE gcl_leases ADD COLUMN notify VARCHAR(255) DEFAULT ''"))
        conn.execute(text("ALTER TABLE gcl_leases ADD COLUMN long_lived BOOLEAN DEFAULT FALSE"))
    conn.execute(
        META.update().where(META.c.key == "schema"),
        {"value": str(SCHEMA_VERSION)},
    )
    log.warning("database schema upgraded from %d to %d", found, SCHEMA_VERSION)
