"""Who leads: a PostgreSQL advisory lock held on a session of its own, kept alive by us.

Every `gcl serve` on one PostgreSQL database and prefix tries to take the same advisory lock;
the one that holds it leads, the others stand by and try again every `poll_seconds`. The lock
lives exactly as long as its session, and the session is set up so that it dies fast when its
owner goes quiet:

- `idle_session_timeout` (default 1.5 s): a leader that stops talking (paused, its host or its
  network gone) loses the session, and so the lock, within that time;
- TCP keepalives on the server side, for a path that is cut while a query runs;
- the leader itself runs `SELECT 1` every `heartbeat_seconds` and treats a failure, or no
  answer within `lost_after_seconds`, as lost leadership.

The lock only decides who *should* lead. Safety comes from the epoch (see `store.py`): a new
leader bumps it in a committed transaction before it loads state, and every write checks it,
so a deposed leader that has not noticed yet cannot commit, and so cannot reveal, a grant.
This module does blocking I/O: the service calls it from a thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger("gcl.coordinator.election")


@dataclass(frozen=True)
class ElectionTiming:
    """How fast a silent leader is replaced; the defaults fail over in about 1.5 s."""

    idle_session_timeout: float = 1.5
    heartbeat_seconds: float = 0.3
    lost_after_seconds: float = 1.0
    poll_seconds: float = 0.05


def lock_key(prefix: str) -> int:
    """One advisory lock per prefix: deployments sharing a database do not contend."""
    value = 0x6763_6C00  # "gcl\0", the single-writer key of earlier versions for "gcl"
    for char in prefix.encode() if prefix != "gcl" else b"":
        value = (value * 31 + char) % (2**31)
    return value


class LeaderLock:
    """The advisory lock on a dedicated psycopg session (not the store's pool)."""

    def __init__(
        self, db_url: str, prefix: str, coordinator_id: str, timing: ElectionTiming
    ) -> None:
        self.dsn = _libpq_dsn(db_url)
        self.key = lock_key(prefix)
        self.coordinator_id = coordinator_id
        self.timing = timing
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """One attempt: True if this process leads now (the lock was free)."""
        import psycopg

        if self._conn is None:
            self._conn = self._connect(psycopg)
        try:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            self._drop()
            raise
        return bool(row and row[0])

    def _connect(self, psycopg: Any) -> Any:
        idle_ms = int(self.timing.idle_session_timeout * 1000)
        statement_ms = int(self.timing.lost_after_seconds * 1000)
        options = (
            f"-c idle_session_timeout={idle_ms} -c statement_timeout={statement_ms} "
            "-c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2"
        )
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, int(self.timing.lost_after_seconds * 2)),
            application_name=f"gcl-lock-{self.coordinator_id}",
            options=options,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=2,
        )

    def heartbeat(self) -> bool:
        """Still leading? A query on the lock session, bounded in time; False means step down."""
        import psycopg

        if self._conn is None:
            return False
        started = time.monotonic()
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objid = %s",
                (self.key,),
            ).fetchone()
        except psycopg.Error as exc:
            log.error("leader lock session lost: %s", exc)
            self._drop()
            return False
        elapsed = time.monotonic() - started
        if elapsed > self.timing.lost_after_seconds:
            log.error("leader lock session answered in %.2fs: stepping down", elapsed)
            self._drop()
            return False
        if not row or not row[0]:
            log.error("leader lock no longer held by this session: stepping down")
            self._drop()
            return False
        return True

    def pid(self) -> int | None:
        """The lock session's backend pid (for tests and `gcl status`)."""
        if self._conn is None:
            return None
        return int(self._conn.info.backend_pid)

    def release(self) -> None:
        """Let go: closing the session frees the lock at once for a standby."""
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _libpq_dsn(db_url: str) -> str:
    """A libpq connection string from the SQLAlchemy URL the store uses."""
    url = make_url(db_url)
    parts = {
        "host": url.host,
        "port": url.port,
        "dbname": url.database,
        "user": url.username,
        "password": url.password,
    }
    parts.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items() if v not in (None, ""))


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:@" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
