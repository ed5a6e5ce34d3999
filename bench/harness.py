"""The system under test: a private nats-server and a coordinator in its own OS process.

The coordinator runs as `python -m gcl.cli serve` so it never shares a CPU or the GIL with the
clients that load it, and so it can be SIGKILLed and restarted like a real crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gcl.coordinator.nats_auth import default_credentials, roles_config, write_credentials
from gcl.coordinator.nats_server import NatsServer
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.discovery import credential_file
from gcl.sdk.exceptions import CoordinatorUnavailable
from gcl.sdk.settings import ClientSettings

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/gcl_bench"
PG_TABLES = ("gcl_leases", "gcl_limits", "gcl_meta")


class BenchError(RuntimeError):
    """The benchmark could not set itself up: the message says what to check."""


def postgres_url() -> str:
    """An empty `gcl_bench` database, apart from the `test` one the test suite resets."""
    try:
        import psycopg
    except ImportError as exc:
        raise BenchError("--db postgres needs psycopg: pip install 'psycopg[binary]'") from exc
    dsn = "host=127.0.0.1 port=5432 user=postgres connect_timeout=3"
    try:
        with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'gcl_bench'").fetchone()
            if not found:
                conn.execute("CREATE DATABASE gcl_bench")
        with psycopg.connect(f"{dsn} dbname=gcl_bench", autocommit=True) as conn:
            for table in PG_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL on 127.0.0.1:5432 is not usable ({exc})") from exc
    return PG_URL


class Cluster:
    """NATS plus one coordinator process, all under one temporary folder, torn down by `close`."""

    def __init__(
        self,
        db: str,
        coordinator_prefix: str = "",
        synchronous: str = "FULL",
        auth: bool = False,
    ) -> None:
        """`auth`: NATS with gcl's roles (as `gcl up` runs it); clients act as the operator,
        in this process and in the load processes (they inherit GCL_NATS_CREDENTIALS)."""
        self.synchronous = synchronous
        self._tmp = tempfile.TemporaryDirectory(prefix="gcl-bench-")
        self.dir = Path(self._tmp.name)
        self.auth = auth
        config = None
        if auth:
            credentials = default_credentials()
            write_credentials(self.dir, credentials)
            config = roles_config(credentials, "gcl")
            os.environ["GCL_NATS_CREDENTIALS"] = str(credential_file("operator", self.dir))
        self.nats = NatsServer(self.dir / "nats", config=config)
        self.db_url = postgres_url() if db == "postgres" else f"sqlite:///{self.dir / 'gcl.db'}"
        self.log_path = self.dir / "coordinator.log"
        self.prefix_cmd = shlex.split(coordinator_prefix)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.nats.url

    def settings(self, **overrides: float) -> ClientSettings:
        return ClientSettings(nats_url=self.url, **overrides)

    def start_nats(self) -> None:
        self.nats.start()

    def launch(self) -> float:
        """Start `python -m gcl.cli serve`; returns the monotonic launch time."""
        env = {
            **os.environ,
            "GCL_NATS_URL": self.url,
            "GCL_DB_URL": self.db_url,
            "GCL_SQLITE_SYNCHRONOUS": self.synchronous,
            "PYTHONPATH": str(ROOT),
        }
        if self.auth:
            env["GCL_NATS_CREDENTIALS"] = str(credential_file("coordinator", self.dir))
        command = [*self.prefix_cmd, sys.executable, "-m", "gcl.cli", "serve"]
        with open(self.log_path, "ab") as log:
            launched = time.monotonic()
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return launched

    @property
    def pid(self) -> int:
        """The coordinator's own pid, also when a profiler wraps it (then it is its child)."""
        if self.process is None:
            raise BenchError("the coordinator is not running")
        if not self.prefix_cmd:
            return self.process.pid
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(children.read_text().split()[0])
        return self.process.pid

    @property
    def nats_pid(self) -> int:
        if self.nats.process is None:
            raise BenchError("nats-server is not running")
        return self.nats.process.pid

    async def wait_ready(self, pinger: AsyncAdminClient, timeout: float = 30.0) -> float:
        """Ping until answered; returns the monotonic time of the first answer.

        `pinger` is connected already (and has a short request timeout), so connecting to NATS
        is not counted in a restart.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"coordinator exited: {self.log_tail()}")
            try:
                await pinger.ping()
                return time.monotonic()
            except CoordinatorUnavailable:
                await asyncio.sleep(0.005)
        raise BenchError(f"coordinator did not answer a ping within {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def kill_coordinator(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop_coordinator(self) -> None:
        """SIGINT first (a profiler wrapping it then writes its report), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30 if self.prefix_cmd else 10)
        except subprocess.TimeoutExpired:
            self.kill_coordinator()
        self.process = None

    def close(self) -> None:
        try:
            self.stop_coordinator()
        finally:
            try:
                self.nats.stop()
            finally:
                if self.auth:
                    os.environ.pop("GCL_NATS_CREDENTIALS", None)
                self._tmp.cleanup()


def cpu_seconds(pid: int) -> float:
    """User+system CPU a live process has used (Linux /proc); 0.0 where that is unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
