"""Fixtures that start real servers: a nats-server per test, a coordinator on a real database.

Coordinators run either in the test's own event loop (fast, for most tests) or as a separate
process (for kill -9 tests). Every fixture tears down what it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gcl import sync as sdk_sync
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.sdk import renewer
from gcl.sdk.admin import AdminClient, AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import CoordinatorUnavailable
from gcl.sdk.settings import ClientSettings

ROOT = Path(__file__).resolve().parent.parent
# The suite never reads a developer's ./.gcl (a running `gcl up`'s URL and credentials):
# every process it starts inherits an empty data folder of its own.
DATA_DIR = Path(tempfile.mkdtemp(prefix="gcl-test-data-"))
os.environ["GCL_DATA_DIR"] = str(DATA_DIR)
PG_SERVER = os.environ.get("GCL_TEST_PG_SERVER", "host=127.0.0.1 port=5432 user=postgres")
# One database per test run, made on first use and dropped at the end: parallel runs (other
# checkouts, CI) never share tables.
PG_DATABASE = f"gcl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
PG_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DATABASE}"
_pg_created = False


def pg_conninfo(database: str = PG_DATABASE) -> str:
    """libpq connection string for the run's database (or another one on the same server)."""
    return f"{PG_SERVER} dbname={database}"


def postgres_available() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(pg_conninfo("postgres"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def reset_postgres() -> None:
    """Create the run's database the first time, else empty it."""
    global _pg_created
    import psycopg

    if not _pg_created:
        with psycopg.connect(pg_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        _pg_created = True
        return
    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        for table in ("gcl_leases", "gcl_limits", "gcl_meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def drop_postgres_database() -> None:
    if not _pg_created:
        return
    import psycopg

    with psycopg.connect(pg_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


@pytest.fixture(scope="session", autouse=True)
def _drop_the_run_database() -> Iterator[None]:
    yield
    drop_postgres_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or the local PostgreSQL emptied for this test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gcl.db'}"
    return fresh_postgres()


@pytest.fixture
def postgres_url() -> str:
    """The local PostgreSQL, emptied for this test (for tests that only make sense there)."""
    return fresh_postgres()


def fresh_postgres() -> str:
    if not postgres_available():
        if os.environ.get("GCL_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required (GCL_REQUIRE_POSTGRES) but down")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not running")
    reset_postgres()
    return PG_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gcl.db'}"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _close_shared_clients() -> Iterator[None]:
    """Shared per-process clients point at this test's NATS: close them after it."""
    yield
    sdk_sync.close()
    renewer.close_all()


def coordinator_settings(nats: NatsServer, db_url: str, **overrides: Any) -> CoordinatorSettings:
    return CoordinatorSettings(nats_url=nats.url, db_url=db_url, **overrides)


@pytest.fixture
async def start_coordinator(
    nats_server: NatsServer, sqlite_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await start_coordinator(db_url=..., **settings)` runs one in this loop."""
    running: list[Coordinator] = []

    async def start(db_url: str | None = None, **overrides: Any) -> Coordinator:
        settings = coordinator_settings(nats_server, db_url or sqlite_url, **overrides)
        coordinator = Coordinator(settings)
        await coordinator.start()
        running.append(coordinator)
        return coordinator

    yield start
    for coordinator in running:
        await coordinator.stop()


@pytest.fixture
async def coordinator(start_coordinator: Callable[..., Any]) -> Coordinator:
    return await start_coordinator()  # type: ignore[no-any-return]


@pytest.fixture
def client_settings(nats_server: NatsServer) -> ClientSettings:
    return ClientSettings(nats_url=nats_server.url, unavailable_timeout=10)


@pytest.fixture
async def client(
    client_settings: ClientSettings,
    coordinator: Coordinator,
) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(client_settings) as c:
        yield c


@pytest.fixture
async def admin(
    nats_server: NatsServer,
    coordinator: Coordinator,
) -> AsyncIterator[AsyncAdminClient]:
    async with AsyncAdminClient(ClientSettings(nats_url=nats_server.url)) as a:
        yield a


class CoordinatorProcess:
    """`python -m gcl.cli serve` as a child process, so tests can SIGKILL it."""

    def __init__(self, nats_url: str, db_url: str, log_path: Path, **env: str) -> None:
        self.nats_url = nats_url
        self.db_url = db_url
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> CoordinatorProcess:
        env = {
            **os.environ,
            "GCL_NATS_URL": self.nats_url,
            "GCL_DB_URL": self.db_url,
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gcl.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with AdminClient(ClientSettings(nats_url=self.nats_url)) as admin:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"coordinator exited: {self.log_path.read_text()[-2000:]}")
                try:
                    admin.ping()
                    return
                except CoordinatorUnavailable:
                    time.sleep(0.05)
        raise RuntimeError(f"coordinator not ready in {timeout}s: {self.log_path.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def coordinator_process(
    nats_server: NatsServer, tmp_path: Path
) -> Iterator[Callable[..., CoordinatorProcess]]:
    """Factory for coordinators in child processes; all are stopped at teardown."""
    started: list[CoordinatorProcess] = []

    def start(db_url: str | None = None, **env: str) -> CoordinatorProcess:
        url = db_url or f"sqlite:///{tmp_path / 'gcl.db'}"
        proc = CoordinatorProcess(nats_server.url, url, tmp_path / "coordinator.log", **env)
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Bounded wait for a condition in tests (awaits coroutines returned by the predicate)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
