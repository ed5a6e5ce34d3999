"""How fast a holder hears of its loss: an operator's revoke to the holder's cancelled block.

    .venv/bin/python bench/loss_push.py [--revokes 200] [--auth]

A fresh NATS and coordinator (its own process, as in bench/bench.py); a holder process that,
over and over, enters `concurrency(..., lease_ttl=30, cancel_on_lost=True)` and waits in the
block; and this process, which revokes each lease as an operator. The holder notes the
monotonic time at which its block is cancelled (CLOCK_MONOTONIC is one clock for every
process on the machine) and this process the time just before it sends the revoke. The TTL
is 30 s so renewal (every 10 s) never finds the loss first: every figure is the pushed notice.
Prints p50 / p90 / p99 / max of revoke->cancel, and of revoke->the operator's reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.harness import Cluster  # noqa: E402
from bench.stats import percentile  # noqa: E402
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402
from gcl.sdk.client import AsyncClient  # noqa: E402
from gcl.sdk.exceptions import LeaseLost  # noqa: E402
from gcl.sdk.settings import ClientSettings  # noqa: E402

LIMIT = "bench.loss"
TTL = 30.0


async def hold(url: str, revokes: int) -> None:
    """The holder process: one block after another, reporting lease ids and cancellations."""
    logging.getLogger("gcl.sdk").setLevel(logging.CRITICAL)  # the loss lines, 200 times over
    async with AsyncClient(ClientSettings(nats_url=url)) as client:
        for _ in range(revokes):
            try:
                async with client.concurrency(LIMIT, lease_ttl=TTL, cancel_on_lost=True) as lease:
                    _say({"lease_id": lease.lease_id})
                    await asyncio.sleep(TTL)
                _say({"error": "not cancelled within the ttl"})
            except LeaseLost:
                _say({"cancelled_at": time.monotonic()})


def _say(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def measure(cluster: Cluster, revokes: int) -> tuple[list[float], list[float]]:
    """Revoke `revokes` leases of a holder in another process; (to cancel, to reply) in ms."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    holder = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--hold", cluster.url, "--revokes", str(revokes),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert holder.stdout is not None
    to_cancel: list[float] = []
    to_reply: list[float] = []
    try:
        async with AsyncAdminClient(cluster.settings()) as admin:
            for _ in range(revokes):
                held = json.loads(await asyncio.wait_for(holder.stdout.readline(), 30))
                await asyncio.sleep(0.01)  # let the holder settle into its block
                sent = time.monotonic()
                await admin.revoke_lease(held["lease_id"])
                to_reply.append((time.monotonic() - sent) * 1000)
                told = json.loads(await asyncio.wait_for(holder.stdout.readline(), 30))
                if "cancelled_at" not in told:
                    raise RuntimeError(f"the holder says: {told}")
                to_cancel.append((told["cancelled_at"] - sent) * 1000)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    return to_cancel, to_reply


def _line(name: str, values: list[float]) -> str:
    figures = (
        "  ".join(f"p{pct} {percentile(values, pct):6.2f} ms" for pct in (50, 90, 99))
        + f"  max {max(values):6.2f} ms"
    )
    return f"{name:<18} {figures}"


async def main(revokes: int, auth: bool) -> None:
    cluster = Cluster("sqlite", auth=auth)
    try:
        cluster.start_nats()
        cluster.launch()
        async with AsyncAdminClient(cluster.settings()) as admin:
            await cluster.wait_ready(admin)
            await admin.create_limit(LIMIT, 1)
        to_cancel, to_reply = await measure(cluster, revokes)
    finally:
        cluster.close()
    print(f"{revokes} revokes, roles {'on' if auth else 'off'}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")  # fmt: skip
    print(_line("revoke -> cancel", to_cancel))
    print(_line("revoke -> reply", to_reply))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revokes", type=int, default=200)
    parser.add_argument("--auth", action="store_true", help="NATS with gcl's roles")
    parser.add_argument("--hold", metavar="NATS_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        asyncio.run(hold(args.hold, args.revokes))
    else:
        asyncio.run(main(args.revokes, args.auth))
