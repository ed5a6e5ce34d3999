"""Code that runs in child processes during tests (importable, so `spawn` can find it)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from gcl.sdk.client import AsyncClient, Client
from gcl.sdk.settings import ClientSettings


def hold_forever(nats_url: str, name: str, ttl: float) -> None:
    """Take a slot, say so on stdout, then hold it until killed."""
    with (
        Client(ClientSettings(nats_url=nats_url)) as client,
        client.concurrency(name, lease_ttl=ttl),
    ):
        print("held", flush=True)
        time.sleep(600)


def contend(
    nats_url: str,
    name: str,
    holders: int,
    rounds: int,
    seed: int,
    inside: Any,
    peak: Any,
    served: Any,
) -> None:
    """Many async holders in one process; count bodies running at once across processes."""
    asyncio.run(_contend(nats_url, name, holders, rounds, seed, inside, peak, served))


async def _contend(
    nats_url: str,
    name: str,
    holders: int,
    rounds: int,
    seed: int,
    inside: Any,
    peak: Any,
    served: Any,
) -> None:
    rng = random.Random(seed)
    async with AsyncClient(ClientSettings(nats_url=nats_url)) as client:

        async def holder() -> None:
            for _ in range(rounds):
                async with client.concurrency(name, timeout_seconds=60):
                    with inside.get_lock():
                        inside.value += 1
                        peak.value = max(peak.value, inside.value)
                    await asyncio.sleep(rng.uniform(0.001, 0.03))
                    with inside.get_lock():
                        inside.value -= 1
                with served.get_lock():
                    served.value += 1

        await asyncio.gather(*(holder() for _ in range(holders)))


if __name__ == "__main__":
    hold_forever(sys.argv[1], sys.argv[2], float(sys.argv[3]))
