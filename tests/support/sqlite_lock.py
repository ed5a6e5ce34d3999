"""Another process holding a SQLite database's write lock, as a backup job or a stray
`sqlite3` shell would: `BEGIN IMMEDIATE` and nothing more until told to let go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

MAX_HOLD_SECONDS = 60  # the child lets go by itself after this, whatever happens to the test

_CHILD = f"""
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
select.select([sys.stdin], [], [], {MAX_HOLD_SECONDS})
conn.execute("ROLLBACK")
conn.close()
"""


def sqlite_path(db_url: str) -> Path:
    database = make_url(db_url).database
    assert database, db_url
    return Path(database)


class ForeignWriter:
    """`hold()` takes the write lock in a child process; `release()` (or `close()`) ends it."""

    def __init__(self, db_url: str) -> None:
        self.path = sqlite_path(db_url)
        self.process: subprocess.Popen[str] | None = None

    def hold(self) -> ForeignWriter:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # the child prints or exits within 10 s
        assert line == "locked", f"the foreign writer could not lock {self.path}: {line!r}"
        return self

    def release(self) -> None:
        """Roll back and exit; returns once the lock is gone."""
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> ForeignWriter:
        return self.hold()

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.close()
