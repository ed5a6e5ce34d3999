"""`gcl run`, `gcl acquire` and `gcl release` against a real NATS and coordinator.

`gcl run` is run as its own process, the way a shell or cron runs it: in a session of its own
(no terminal), stdin from /dev/null and a bare environment. Commands it runs are small Python
programs that record what happened to them in files.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcl.cli.main import run
from gcl.cli.worker import EXIT_NOT_FOUND, EXIT_TEMPFAIL
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AdminClient, AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import InvalidRequest
from gcl.sdk.settings import ClientSettings
from tests.conftest import DATA_DIR, ROOT, CoordinatorProcess, wait_until

RUN_TIMEOUT = 60.0

# A command that records when it ran, waits a little, and exits with the status it is given;
# on SIGTERM / SIGHUP / SIGINT it writes the signal's name and exits with 40 + its number.
RECORDER = """
import signal, sys, time
path, hold, status = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def caught(signum, frame):
    with open(path, "a") as out:
        out.write(f"signal {signal.Signals(signum).name}\\n")
    sys.exit(40 + signum)
for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(signum, caught)
with open(path, "a") as out:
    out.write(f"start {time.time()!r}\\n")
time.sleep(hold)
with open(path, "a") as out:
    out.write(f"end {time.time()!r}\\n")
sys.exit(status)
"""


def cron_env(nats: NatsServer, **extra: str) -> dict[str, str]:
    """What cron gives a job: hardly anything (no HOME, no TERM), plus where gcl is."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "GCL_NATS_URL": nats.url,
        "GCL_DATA_DIR": str(DATA_DIR),
        **extra,
    }


async def gcl_run(
    nats: NatsServer, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m gcl.cli ARGS` started as cron would: own session, no terminal, no stdin."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gcl.cli",
        *args,
        env=env or cron_env(nats),
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, err.decode()


def recorder(path: Path, hold: float = 0.3, status: int = 0) -> list[str]:
    return [sys.executable, "-c", RECORDER, str(path), str(hold), str(status)]


def events_in(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def started(path: Path) -> bool:
    return any(line.startswith("start") for line in events_in(path))


# --- gcl run -------------------------------------------------------------------------------


async def test_four_runs_on_a_limit_of_one_never_overlap_and_keep_their_status(
    nats_server: NatsServer, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    await admin.create_limit("nightly", 1)
    files = [tmp_path / f"run{i}.log" for i in range(4)]
    runs = [
        await gcl_run(nats_server, "run", "nightly", "--", *recorder(path, 0.3, 10 + i))
        for i, path in enumerate(files)
    ]
    outcomes = await asyncio.gather(*(finish(p) for p in runs))

    assert [code for code, _ in outcomes] == [10, 11, 12, 13], outcomes
    spans = []
    for path in files:
        lines = events_in(path)
        assert [line.split()[0] for line in lines] == ["start", "end"], lines
        spans.append(tuple(float(line.split()[1]) for line in lines))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"two commands ran at once: {spans}"
    assert (await admin.get_limit("nightly")).limit.held == 0  # all released


async def test_a_run_that_cannot_get_its_slots_says_why_and_exits_75(
    nats_server: NatsServer, client_settings: ClientSettings, admin: AsyncAdminClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    await admin.create_limit("gpu", 1)
    async with (
        AsyncClient(client_settings, worker_id="gpu-2", label="train") as holder,
        holder.concurrency("gpu"),
    ):
        env = cron_env(nats_server, GCL_WAIT_REPORT_AFTER="0.3")
        process = await gcl_run(nats_server, "run", "gpu", "--timeout", "2s", "--", "true", env=env)
        code, err = await finish(process)
    assert code == EXIT_TEMPFAIL, err
    assert "gcl run: waiting " in err and "1st in line of 1" in err  # why, while it waited
    assert "could not acquire" in err and "gpu-2@" in err and "[train]" in err  # and at the end


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_signals_are_passed_on_to_the_command(
    nats_server: NatsServer, admin: AsyncAdminClient, tmp_path: Path, sig: signal.Signals
) -> None:
    await admin.create_limit("sig", 1)
    path = tmp_path / "child.log"
    process = await gcl_run(nats_server, "run", "sig", "--", *recorder(path, 30))
    await wait_until(lambda: started(path), timeout=RUN_TIMEOUT)
    process.send_signal(sig)
    code, err = await finish(process)
    assert code == 40 + sig, err
    assert f"signal {sig.name}" in events_in(path)
    assert (await admin.get_limit("sig")).limit.held == 0


async def test_a_signal_while_waiting_withdraws_and_exits_128_plus_it(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("busy", 1)
    async with client.concurrency("busy"):
        process = await gcl_run(nats_server, "run", "busy", "--", "true")
        await wait_until(lambda: _waiters(admin, "busy", 1), timeout=RUN_TIMEOUT)
        process.send_signal(signal.SIGTERM)
        code, err = await finish(process)
        assert code == 128 + signal.SIGTERM, err
        assert (await admin.get_limit("busy")).limit.waiters == 0  # it left the queue


async def test_a_revoked_run_stops_its_command_at_once(
    nats_server: NatsServer, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    await admin.create_limit("revocable", 1)
    path = tmp_path / "child.log"
    process = await gcl_run(nats_server, "run", "revocable", "--", *recorder(path, 30))
    await wait_until(lambda: started(path), timeout=RUN_TIMEOUT)
    (lease,) = await admin.list_leases("revocable")
    assert lease.holder.label.startswith("gcl run ")
    revoked = time.monotonic()
    await admin.revoke_lease(lease.lease_id)
    code, err = await finish(process)
    assert code == 40 + signal.SIGTERM, err
    assert time.monotonic() - revoked < 10  # pushed, not the next renewal (ttl 30 s)
    assert "lease lost (revoked: revoked by an operator)" in err


async def test_a_missing_command_is_127_and_a_missing_dashdash_is_a_usage_error(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("x", 1)
    code, err = await finish(await gcl_run(nats_server, "run", "x", "--", "no-such-cmd-42"))
    assert code == EXIT_NOT_FOUND and "command not found: no-such-cmd-42" in err
    code, err = await finish(await gcl_run(nats_server, "run", "x", "true"))
    assert code == 1 and "give the command after --" in err
    assert (await admin.get_limit("x")).limit.held == 0


# --- gcl acquire / gcl release -------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def gcl_sync(url: str, *args: str, stdin: str | None = None, **env: str) -> Outcome:
    runner = CliRunner()
    with runner.isolation(input=stdin, env=env) as (out, err, _):
        code = run(["--nats", url, *args])
    return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


async def gcl(nats: NatsServer, *args: str, stdin: str | None = None, **env: str) -> Outcome:
    return await asyncio.to_thread(gcl_sync, nats.url, *args, stdin=stdin, **env)


async def test_acquire_prints_a_lease_that_release_ends(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 2)
    taken = await gcl(nats_server, "acquire", "db", "--ttl", "2h")
    assert taken.code == 0, taken.err
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in taken.out.strip().splitlines()
    )
    assert set(exported) == {"GCL_LEASE_ID", "GCL_LEASE_SECRET"}
    assert "not renewed" in taken.err and "gcl release" in taken.err
    (lease,) = await admin.list_leases("db")
    assert lease.lease_id == exported["GCL_LEASE_ID"]
    assert lease.long_lived and lease.ttl == 7200 and lease.holder.label == "gcl acquire"

    wrong = await gcl(nats_server, "release", lease.lease_id, "--secret", "x" * 32)
    assert wrong.code == 1 and "secret" in wrong.err
    ended = await gcl(nats_server, "release", **exported)  # as after eval "$(gcl acquire ...)"
    assert ended.code == 0 and "released lease" in ended.out, ended.err
    assert await admin.list_leases("db") == []
    again = await gcl(nats_server, "release", **exported)
    assert again.code == 0 and "already released" in again.out


async def test_acquire_json_and_release_from_stdin(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 1)
    taken = await gcl(nats_server, "acquire", "db", "--ttl", "30d", "--occupy", "1", "--json")
    assert taken.code == 0, taken.err
    record = json.loads(taken.out)
    assert record["long_lived"] is True and record["ttl"] == 30 * 86_400
    assert record["expires_at"] == pytest.approx(record["granted_at"] + 30 * 86_400)
    assert len(record["secret"]) >= 16 and record["names"] == ["db"]
    busy = await gcl(nats_server, "acquire", "db", "--ttl", "1h", "--timeout", "0.5")
    assert busy.code == EXIT_TEMPFAIL and "could not acquire" in busy.err
    ended = await gcl(nats_server, "release", stdin=taken.out)
    assert ended.code == 0, ended.err
    assert (await admin.get_limit("db")).limit.held == 0


async def test_release_says_what_it_needs(
    nats_server: NatsServer, coordinator: Coordinator
) -> None:
    nothing = await gcl(nats_server, "release", stdin="")
    assert nothing.code == 1 and "gcl acquire --json" in nothing.err
    bad = await gcl(nats_server, "release", "has space", "--secret", "s" * 20)
    assert bad.code == 1 and "lease_id" in bad.err


async def test_a_long_lease_is_refused_to_an_ordinary_acquire(client: AsyncClient) -> None:
    with pytest.raises(InvalidRequest, match="long_lived"):
        await client.acquire("db", lease_ttl=2 * 86_400)


def test_a_long_lease_survives_a_coordinator_restart_and_ends_with_release(
    coordinator_process: Callable[..., CoordinatorProcess], nats_server: NatsServer
) -> None:
    first = coordinator_process()
    with AdminClient(ClientSettings(nats_url=nats_server.url)) as admin:
        admin.create_limit("legacy", 1)
    taken = gcl_sync(nats_server.url, "acquire", "legacy", "--ttl", "30d", "--json")
    assert taken.code == 0, taken.err
    record = json.loads(taken.out)

    first.kill()  # kill -9, then a new coordinator on the same SQLite file
    coordinator_process()
    with AdminClient(ClientSettings(nats_url=nats_server.url)) as admin:
        (lease,) = admin.list_leases("legacy")
        assert lease.lease_id == record["lease_id"] and lease.long_lived
        assert lease.ttl == 30 * 86_400
        assert 30 * 86_400 - 600 < lease.expires_in <= 30 * 86_400  # what remained, not 30 s
        inspected = gcl_sync(nats_server.url, "inspect", "legacy")
        assert "(long-lived)" in inspected.out, inspected.out
        ended = gcl_sync(nats_server.url, "release", stdin=taken.out)
        assert ended.code == 0 and "released lease" in ended.out, ended.err
        assert admin.list_leases("legacy") == []


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GCL_LEASE_ID", "GCL_LEASE_SECRET", "GCL_NATS_ROLE"):
        monkeypatch.delenv(name, raising=False)
