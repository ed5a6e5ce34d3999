"""Chaos: the short run of bench/chaos.py, its checks shown to fail, and what it found.

- `test_a_short_chaos_run_keeps_every_invariant`: the same code as `bench/chaos.py`, for ~20 s
  with one fault of each kind, asserting every invariant held.
- The checks of `bench/chaos_checks.py` are run on small made-up histories that break them: a
  checker that cannot fail would prove nothing.
- Regression tests for the product bugs the chaos run found.
"""

from __future__ import annotations

import asyncio

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient

# --- found by the chaos run -----------------------------------------------------------------


async def test_a_sqlite_coordinator_rides_out_a_nats_outage(
    coordinator: Coordinator, client: AsyncClient, admin: AsyncAdminClient, nats_server: NatsServer
) -> None:
    """NATS down for longer than the leader's `nats_lost_seconds`: a SQLite coordinator has no
    standby that could serve instead, so it must not step down (it used to exit with code 4,
    leaving nobody to serve when NATS came back)."""
    await admin.create_limit("gpu", 1)
    coordinator.leadership.nats_lost_seconds = 0.3  # the default is 2 s: keep the test short
    nats_server.kill()
    await asyncio.sleep(1.2)  # several heartbeats past nats_lost_seconds
    restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
    await asyncio.to_thread(restarted.start)
    try:
        assert coordinator.leading
        async with client.concurrency("gpu", lease_ttl=3, timeout_seconds=10) as lease:
            assert lease.lease_id is not None
    finally:
        nats_server.process = restarted.process
