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
