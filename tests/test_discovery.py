"""A worker started in the folder of a running `gcl up` finds its NATS, as the CLI does."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcl import asyncio as gcl_asyncio
from gcl.cli.config import announce_url
from gcl.sdk import AsyncAdminClient, ClientSettings
from gcl.sdk.discovery import DEFAULT_NATS_URL, resolve_nats_url


def test_the_order_is_setting_then_environment_then_announced_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GCL_NATS_URL", raising=False)
    monkeypatch.delenv("GCL_DATA_DIR", raising=False)
    assert ClientSettings().nats_url == DEFAULT_NATS_URL
    (tmp_path / ".gcl").mkdir()
    announce_url(tmp_path / ".gcl", "nats://127.0.0.1:14999")
    assert ClientSettings().nats_url == "nats://127.0.0.1:14999"
    assert resolve_nats_url(None) == "nats://127.0.0.1:14999"
    monkeypatch.setenv("GCL_NATS_URL", "nats://127.0.0.1:15000")
    assert ClientSettings().nats_url == "nats://127.0.0.1:15000"
    assert ClientSettings(nats_url="nats://127.0.0.1:15001").nats_url == "nats://127.0.0.1:15001"
    assert resolve_nats_url("nats://127.0.0.1:15002") == "nats://127.0.0.1:15002"


def test_gcl_data_dir_moves_the_announcement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GCL_NATS_URL", raising=False)
    monkeypatch.setenv("GCL_DATA_DIR", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    announce_url(tmp_path / "state", "nats://127.0.0.1:16000")
    assert ClientSettings().nats_url == "nats://127.0.0.1:16000"


async def test_a_worker_with_no_setting_acquires_through_the_announced_url(
    coordinator, admin: AsyncAdminClient, nats_server, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GCL_NATS_URL", raising=False)
    monkeypatch.delenv("GCL_DATA_DIR", raising=False)
    (tmp_path / ".gcl").mkdir()
    announce_url(tmp_path / ".gcl", nats_server.url)
    await admin.create_limit("found", 1)
    async with gcl_asyncio.concurrency("found") as lease:
        assert lease.fencing_token is not None
