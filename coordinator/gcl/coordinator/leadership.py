"""A coordinator's life as leader or standby: wait for the lead, keep it, give it up in time.

On PostgreSQL any number of `gcl serve` processes share a database and prefix. Each connects
to NATS, then waits here (a hot standby: connected, answering `admin.status`, serving nothing)
until it wins the leader lock (`election.py`). The leader then runs `watch()`: it heartbeats
the lock session and watches its NATS connection, and calls `on_lost` when either has been
gone too long. The service then stops serving at once and exits non-zero, for its supervisor
to restart it as a standby.

SQLite has no election: its file lock allows one coordinator, which leads from the start and,
with no standby to hand over to, rides out a NATS outage instead of stepping down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import make_url

from gcl.coordinator.election import ElectionTiming, LeaderLock

log = logging.getLogger("gcl.coordinator")


class Leadership:
    """The leader lock of one coordinator, and the watch that keeps or gives it up."""

    def __init__(
        self,
        db_url: str,
        prefix: str,
        coordinator_id: str,
        timing: ElectionTiming | None = None,
        nats_lost_seconds: float = 2.0,
    ) -> None:
        self.timing = timing or ElectionTiming()
        self.nats_lost_seconds = nats_lost_seconds
        self.elected = make_url(db_url).get_backend_name() == "postgresql"
        self.lock = (
            LeaderLock(db_url, prefix, coordinator_id, self.timing) if self.elected else None
        )
        self.standing_by_since = time.time()
        self._watch: asyncio.Task[None] | None = None

    async def wait_for_lead(self) -> float:
        """Block until this process holds the lock; returns the wall time it got it."""
        if self.lock is None:
            return time.time()
        said = False
        errors = 0
        while True:
            try:
                if await asyncio.to_thread(self.lock.try_acquire):
                    return time.time()
                errors = 0
            except Exception as exc:  # the database is down or unreachable: keep trying
                errors += 1
                if errors in (1, 10) or errors % 100 == 0:
                    log.warning("cannot reach the database to stand for leader: %s", exc)
            if not said:
                log.info("standing by: another coordinator leads; taking over when it goes")
                said = True
            await asyncio.sleep(self.timing.poll_seconds)

    def watch(self, connected: Callable[[], bool], on_lost: Callable[[str], None]) -> None:
        """Start watching the lock session and the NATS connection (`connected`)."""
        self._watch = asyncio.get_running_loop().create_task(self._run(connected, on_lost))

    async def _run(self, connected: Callable[[], bool], on_lost: Callable[[str], None]) -> None:
        offline_since: float | None = None
        while True:
            await asyncio.sleep(self.timing.heartbeat_seconds)
            if self.lock is not None and not await self._heartbeat():
                on_lost("lost the leader lock (its database session ended or stalled)")
                return
            if connected() or self.lock is None:  # SQLite: no standby could serve instead
                offline_since = None
            elif offline_since is None:
                offline_since = time.monotonic()
            elif time.monotonic() - offline_since > self.nats_lost_seconds:
                on_lost(f"lost NATS for over {self.nats_lost_seconds:g}s: a standby can serve")
                return

    async def _heartbeat(self) -> bool:
        assert self.lock is not None
        try:
            beat = asyncio.to_thread(self.lock.heartbeat)
            return await asyncio.wait_for(beat, self.timing.lost_after_seconds * 1.5)
        except (TimeoutError, Exception):
            return False

    def release(self) -> None:
        """Stop watching and let go of the lock (a standby takes over within ~0.1 s)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.lock is not None:
            self.lock.release()
