"""Soak: churn a coordinator process for a while and watch its memory stay flat.

Starts its own nats-server and `python -m gcl.cli serve` on loopback (as bench/bench.py does),
then, until `--seconds` have passed:

- churners acquire one-day leases, each under a holder never seen before, renew each a few
  times and release it (the holder table and the expiry heap must forget them);
- one renewer renews a single lease as fast as it can (renewals must not pile up);
- waiters queue behind a full limit, keep alive and withdraw (the waiter heap must forget them).

It samples the coordinator's resident memory (VmRSS) every `--interval` seconds after a warm-up
and prints whether it is flat: the mean of the last third of the samples against the first.

    .venv/bin/python bench/soak.py [--seconds 120] [--interval 1] [--churners 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.harness import BenchError, Cluster  # noqa: E402
from gcl.protocol import (  # noqa: E402
    ACQUIRE,
    RELEASE,
    RENEW,
    WAIT_KEEPALIVE,
    WAIT_WITHDRAW,
    AcquireRequest,
    HeldLease,
    Holder,
    RequestRef,
    Withdraw,
)
from gcl.sdk.admin import AsyncAdminClient  # noqa: E402
from gcl.sdk.exceptions import GCLError  # noqa: E402
from gcl.sdk.transport import Rpc, connect  # noqa: E402

DAY = 86_400.0
SECRET = "soak-secret-0123456789"  # the requester's own: renewals must present it
RENEWS_PER_LEASE = 5
FLAT_RATIO = 1.05  # the last third may be at most 5 % above the first ...
FLAT_SLACK_MB = 2.0  # ... or 2 MB, whichever is more


@dataclass
class Counts:
    grants: int = 0
    renewals: int = 0
    waits: int = 0
    errors: int = 0
    rss_mb: list[float] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


async def churn(rpc: Rpc, serial: itertools.count[int], until: float, counts: Counts) -> None:
    """Acquire under a brand-new holder, renew a few times, release; again until `until`."""
    while time.monotonic() < until:
        n = next(serial)
        holder = Holder(worker_id=f"soak-{n}", host=f"host-{n % 997}", pid=n % 2**31, label="s")
        request = AcquireRequest(
            secret=SECRET,
            request_id=f"c{n}",
            names=["soak:free"],
            lease_ttl=DAY,
            wait=False,
            holder=holder,
        )
        try:
            result = await rpc.call(ACQUIRE, request)
            assert result.lease is not None
            ref = HeldLease(lease_id=result.lease.lease_id, secret=SECRET)
            for _ in range(RENEWS_PER_LEASE):
                await rpc.call(RENEW, ref)
            await rpc.call(RELEASE, ref)
        except GCLError:
            counts.errors += 1
            continue
        counts.grants += 1
        counts.renewals += RENEWS_PER_LEASE


async def renew_one(rpc: Rpc, until: float, counts: Counts) -> None:
    """One lease renewed back to back: every renewal used to leave a heap entry for a TTL."""
    result = await rpc.call(
        ACQUIRE, AcquireRequest(secret=SECRET, request_id="renewed", names=["soak:free"])
    )
    assert result.lease is not None
    ref = HeldLease(lease_id=result.lease.lease_id, secret=SECRET)
    while time.monotonic() < until:
        try:
            await rpc.call(RENEW, ref)
            counts.renewals += 1
        except GCLError:
            counts.errors += 1


async def wait_and_leave(rpc: Rpc, serial: itertools.count[int], until: float, c: Counts) -> None:
    """Queue behind the full limit under a new holder, keep alive twice, withdraw."""
    while time.monotonic() < until:
        n = next(serial)
        holder = Holder(worker_id=f"waiter-{n}", host="soak", pid=n % 2**31)
        request = AcquireRequest(
            secret=SECRET, request_id=f"w{n}", names=["soak:full"], holder=holder
        )
        try:
            await rpc.call(ACQUIRE, request)
            for _ in range(2):
                await rpc.call(
                    WAIT_KEEPALIVE, RequestRef(request_id=request.request_id, secret=SECRET)
                )
            await rpc.call(WAIT_WITHDRAW, Withdraw(request_id=request.request_id, secret=SECRET))
        except GCLError:
            c.errors += 1
            continue
        c.waits += 1


async def sample(pid: int, start: float, until: float, interval: float, counts: Counts) -> None:
    next_at = start
    while (now := time.monotonic()) < until:
        if now >= next_at:
            counts.rss_mb.append(rss_mb(pid))
            next_at += interval
        await asyncio.sleep(min(interval, max(0.0, until - now)))


async def soak(cluster: Cluster, args: argparse.Namespace) -> Counts:
    counts = Counts()
    async with AsyncAdminClient(cluster.settings(request_timeout=1.0)) as admin:
        await cluster.wait_ready(admin)
        await admin.create_limit("soak:free", 1_000_000)
        await admin.create_limit("soak:full", 1)
        settings = cluster.settings(request_timeout=10.0)
        nc = await connect(settings, "gcl-soak")
        try:
            rpc = Rpc(nc, settings)
            blocker = await rpc.call(
                ACQUIRE, AcquireRequest(secret=SECRET, request_id="b", names=["soak:full"])
            )
            assert blocker.lease is not None
            began = time.monotonic()
            until = began + args.seconds
            warm = began + min(max(5.0, args.seconds * 0.1), args.seconds / 2)
            serial = itertools.count()
            tasks = [churn(rpc, serial, until, counts) for _ in range(args.churners)]
            tasks.append(renew_one(rpc, until, counts))
            tasks.append(wait_and_leave(rpc, serial, until, counts))
            tasks.append(sample(cluster.pid, warm, until, args.interval, counts))
            await asyncio.gather(*tasks)
        finally:
            await nc.close()
    return counts


def verdict(samples: list[float]) -> tuple[float, float, bool]:
    third = max(1, len(samples) // 3)
    first, last = statistics.mean(samples[:third]), statistics.mean(samples[-third:])
    return first, last, last <= max(first * FLAT_RATIO, first + FLAT_SLACK_MB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to churn")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--churners", type=int, default=6, help="concurrent churning tasks")
    parser.add_argument(
        "--coordinator-prefix", default="", help="run the coordinator under this command"
    )
    args = parser.parse_args()
    if not 1 <= args.seconds <= 3_600:
        parser.error("--seconds must be between 1 and 3600")
    cluster = Cluster("sqlite", args.coordinator_prefix)
    try:
        cluster.start_nats()
        cluster.launch()
        started = time.monotonic()
        counts = asyncio.run(soak(cluster, args))
        elapsed = time.monotonic() - started
    except BenchError as exc:
        sys.exit(f"soak failed: {exc}")
    finally:
        with contextlib.suppress(Exception):
            cluster.close()
    if len(counts.rss_mb) < 3:
        sys.exit("soak failed: too few memory samples; run for longer (--seconds)")
    first, last, flat = verdict(counts.rss_mb)
    print(
        f"{elapsed:.0f}s: {counts.grants:,} leases under distinct holders "
        f"({counts.renewals:,} renewals), {counts.waits:,} waiters queued and withdrawn, "
        f"{counts.errors} errors"
    )
    print(
        f"coordinator RSS: first third {first:.1f} MB, last third {last:.1f} MB, "
        f"min {min(counts.rss_mb):.1f}, max {max(counts.rss_mb):.1f} "
        f"({len(counts.rss_mb)} samples): {'FLAT' if flat else 'GROWING'}"
    )
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
