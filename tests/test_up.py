"""`gcl up` as a person runs it: started, stopped by Ctrl-C, a closed terminal, or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcl.coordinator.nats_server import port_in_use
from tests.conftest import ROOT


def _start_up(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GCL_DATA_DIR": str(folder / ".gcl")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcl.cli", "up", "--port", "0", "--log-level", "warning"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url_file = folder / ".gcl" / "nats.url"
    deadline = time.monotonic() + 30
    while not url_file.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "gcl up never announced its NATS URL"
        time.sleep(0.05)
    port = int(url_file.read_text().strip().rsplit(":", 1)[1])
    assert port_in_use(port)
    return proc, port


def _port_closes(port: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not port_in_use(port):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_up_stops_cleanly_and_takes_its_nats_down(tmp_path: Path, sig: signal.Signals) -> None:
    proc, port = _start_up(tmp_path)
    time.sleep(0.5)  # let the coordinator start serving
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert b"stopped NATS and coordinator" in out
    assert _port_closes(port)
    assert not (tmp_path / ".gcl" / "nats.url").exists()


def test_a_killed_up_leaves_no_nats_behind(tmp_path: Path) -> None:
    proc, port = _start_up(tmp_path)
    proc.kill()
    proc.wait(10)
    assert _port_closes(port), "the private nats-server outlived a SIGKILLed gcl up"


def _gcl(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "GCL_DATA_DIR": str(folder / ".gcl"), **env}
    environ.pop("GCL_NATS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gcl.cli", *args],
        cwd=folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_is_secure_by_default_and_its_commands_need_no_extra_step(tmp_path: Path) -> None:
    proc, port = _start_up(tmp_path)
    try:
        auth = tmp_path / ".gcl" / "auth"
        assert {p.name for p in auth.iterdir()} == {
            "coordinator.env",
            "operator.env",
            "observer.env",
            "worker.env",
        }
        assert all(p.stat().st_mode & 0o077 == 0 for p in auth.iterdir())
        created = _gcl(tmp_path, "create", "db", "--limit", "2")
        assert created.returncode == 0, created.stderr
        listed = _gcl(tmp_path, "ls", "--json")
        assert listed.returncode == 0 and '"db"' in listed.stdout
        as_worker = _gcl(tmp_path, "delete", "db", "--yes", GCL_NATS_ROLE="worker")
        assert as_worker.returncode == 1 and "another gcl role" in as_worker.stderr
        anonymous = _gcl(
            tmp_path, "--nats", f"nats://127.0.0.1:{port}", "ls", GCL_DATA_DIR=str(tmp_path / "x")
        )
        assert anonymous.returncode == 1 and "refused" in anonymous.stderr  # no credential
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
