"""Stopping `gcl serve`: within 10 s whatever NATS and the database do, with no traceback,
and an exit code that says what happened (0 clean, 2 NATS unreachable, 3 storage).

Each coordinator is `python -m gcl.cli serve` in its own process (GCL_NATS_URL, GCL_DB_URL),
with workers acquiring and releasing against it when the signal comes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import CoordinatorUnavailable, GCLError
from gcl.sdk.settings import ClientSettings
from tests.conftest import ROOT, CoordinatorProcess
from tests.support.sqlite_lock import ForeignWriter

STOP_BOUND = 10.0  # seconds from SIGTERM to exit, the promise under test


def wait_exit(proc: CoordinatorProcess, timeout: float = 30.0) -> tuple[int | None, float]:
    """The exit code and how long it took (None if it had to be killed)."""
    assert proc.process is not None
    started = time.monotonic()
    try:
        code: int | None = proc.process.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    return code, time.monotonic() - started


def output(proc: CoordinatorProcess) -> str:
    return proc.log_path.read_text(errors="replace")


async def traffic(url: str, stop: asyncio.Event) -> int:
    """Workers acquiring and releasing in a loop, riding out NATS's death, until `stop`."""
    settings = ClientSettings(nats_url=url, request_timeout=1, unavailable_timeout=1)
    done = 0
    async with AsyncClient(settings) as client:

        async def worker() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    async with client.concurrency("busy", lease_ttl=5, timeout_seconds=2):
                        done += 1
                except GCLError:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(4)))
    return done


async def serve_under_load(
    tmp_path: Path, name: str, **env: str
) -> tuple[NatsServer, CoordinatorProcess, asyncio.Event, asyncio.Task[int]]:
    nats = NatsServer(tmp_path / f"nats-{name}").start()
    db_url = f"sqlite:///{tmp_path / f'{name}.db'}"
    proc = CoordinatorProcess(nats.url, db_url, tmp_path / f"serve-{name}.log", **env)
    await asyncio.to_thread(proc.start)
    async with AsyncAdminClient(ClientSettings(nats_url=nats.url)) as admin:
        await admin.create_limit("busy", 2)
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(nats.url, stop))
    await asyncio.sleep(0.5)  # requests and commits in flight when the signal comes
    return nats, proc, stop, load


async def check_stopped_cleanly(proc: CoordinatorProcess) -> None:
    code, took = await asyncio.to_thread(wait_exit, proc)
    text = output(proc)
    assert took < STOP_BOUND, f"took {took:.1f}s to stop:\n{text[-3000:]}"
    assert code == 0, f"exit {code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    assert "stopped." in text


@pytest.mark.slow
async def test_sigterm_to_gcl_and_nats_at_the_same_moment(tmp_path: Path) -> None:
    """As `docker compose down` does: both get SIGTERM together, four times over, each
    order twice."""
    for attempt in range(4):
        nats, proc, stop, load = await serve_under_load(tmp_path, f"same-{attempt}")
        try:
            assert proc.process is not None and nats.process is not None
            first, second = (proc.process, nats.process)[:: 1 if attempt % 2 else -1]
            os.kill(first.pid, signal.SIGTERM)
            os.kill(second.pid, signal.SIGTERM)
            await check_stopped_cleanly(proc)
            stop.set()
            assert await asyncio.wait_for(load, 30) > 0
        finally:
            stop.set()
            proc.kill()
            nats.stop()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_sigterm_after_nats_is_gone(tmp_path: Path, how: str) -> None:
    """NATS stopped (or crashed) first; gcl, reconnecting, is told to stop a second later."""
    nats, proc, stop, load = await serve_under_load(tmp_path, how)
    try:
        nats.stop() if how == "stop" else nats.kill()
        await asyncio.sleep(1.5)
        assert proc.process is not None and proc.process.poll() is None
        proc.process.send_signal(signal.SIGTERM)
        await check_stopped_cleanly(proc)
        assert "reconnecting" in output(proc)  # it really was without NATS
        stop.set()
        await asyncio.wait_for(load, 30)
    finally:
        stop.set()
        proc.kill()
        nats.stop()


async def _ask_to_write(url: str) -> None:
    """An admin create that has to commit; its reply will not come while the db is stuck."""
    settings = ClientSettings(nats_url=url, request_timeout=0.5)
    async with AsyncAdminClient(settings) as admin:
        with pytest.raises(CoordinatorUnavailable):
            await admin.create_limit("needs-a-commit", 1)


async def test_a_database_that_keeps_failing_exits_3(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db_url = f"sqlite:///{tmp_path / 'gcl.db'}"
    proc = CoordinatorProcess(
        nats_server.url, db_url, tmp_path / "serve.log", GCL_DB_RETRY_SECONDS="1"
    )
    await asyncio.to_thread(proc.start)
    try:
        with ForeignWriter(db_url):
            await _ask_to_write(nats_server.url)
            code, took = await asyncio.to_thread(wait_exit, proc, 30)
        text = output(proc)
        assert code == 3, f"exit {code} after {took:.1f}s:\n{text[-3000:]}"
        assert "the database kept failing" in text
        assert "database is locked" in text or "locked or slow" in text
        assert "Traceback" not in text, text[-3000:]
    finally:
        proc.kill()


async def test_sigterm_while_the_database_is_stuck_exits_3_in_time(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A commit cannot land (another process holds the lock): the stop gives up on it in
    time, says what was not committed, and exits 3."""
    db_url = f"sqlite:///{tmp_path / 'gcl.db'}"
    proc = CoordinatorProcess(nats_server.url, db_url, tmp_path / "serve.log")
    await asyncio.to_thread(proc.start)
    try:
        with ForeignWriter(db_url):
            await _ask_to_write(nats_server.url)
            assert proc.process is not None
            proc.process.send_signal(signal.SIGTERM)
            code, took = await asyncio.to_thread(wait_exit, proc)
        text = output(proc)
        assert took < STOP_BOUND, f"took {took:.1f}s to stop:\n{text[-3000:]}"
        assert code == 3, f"exit {code}:\n{text[-3000:]}"
        assert "not committed" in text and "Traceback" not in text, text[-3000:]
    finally:
        proc.kill()


def _serve_once(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "gcl.cli", "serve"],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nats_unreachable_at_start_exits_2(tmp_path: Path) -> None:
    done = _serve_once(
        tmp_path,
        GCL_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        GCL_DB_URL=f"sqlite:///{tmp_path / 'gcl.db'}",
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach NATS" in done.stderr and "Traceback" not in done.stderr


def test_a_database_that_cannot_be_opened_exits_3(tmp_path: Path) -> None:
    done = _serve_once(
        tmp_path,
        GCL_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        GCL_DB_URL="sqlite:////proc/no-such-dir/gcl.db",
    )
    assert done.returncode == 3, done.stderr
    assert "cannot open the database" in done.stderr and "Traceback" not in done.stderr
