"""The `gcl` command against a real NATS server and coordinator.

Commands run through `gcl.cli.main.run` (the same exit-code mapping as the `gcl` script) in a
thread, because the coordinator lives in the test's event loop and must keep running.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from gcl.cli.demo import DEMO_LIMITS, run_demo
from gcl.cli.main import cli, run
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import LeaseLost, LimitNotFound
from tests.conftest import ROOT, wait_until


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def gcl_sync(url: str, *args: str, stdin: str | None = None) -> Outcome:
    runner = CliRunner()
    with runner.isolation(input=stdin) as (out, err, _):
        code = run(["--nats", url, *args])
    return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


async def gcl(nats: NatsServer, *args: str, stdin: str | None = None) -> Outcome:
    return await asyncio.to_thread(gcl_sync, nats.url, *args, stdin=stdin)


def gcl_process(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "gcl.cli", "--nats", url, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def waiters(admin: AsyncAdminClient, name: str) -> int:
    return (await admin.get_limit(name)).limit.waiters


# --- help and entry point ------------------------------------------------------------------


def test_help_lists_every_command_and_the_environment() -> None:
    result = gcl_process("nats://127.0.0.1:4222", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("up", "serve", "dashboard", "create", "ls", "inspect", "update", "delete"):
        assert f"  {command} " in result.stdout
    for command in ("leases", "revoke", "ping"):
        assert f"  {command} " in result.stdout
    assert "GCL_NATS_URL" in result.stdout and "GCL_DB_URL" in result.stdout


# --- create / ls ---------------------------------------------------------------------------


async def test_create_then_ls_shows_occupancy_and_bar(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    created = await gcl(nats_server, "create", "db", "--limit", "3")
    assert created.code == 0, created.err
    assert "created limit 'db': 0/3 slots" in created.out
    async with client.concurrency("db", occupy=2):
        listed = await gcl(nats_server, "ls")
        as_json = await gcl(nats_server, "ls", "--json")
    assert listed.code == 0, listed.err
    row = next(line for line in listed.out.splitlines() if line.startswith("db "))
    assert "2/3" in row and "███████░░░" in row
    [info] = json.loads(as_json.out)
    assert (info["name"], info["limit"], info["held"]) == ("db", 3, 2)


async def test_create_with_decay_and_disabled(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    result = await gcl(
        nats_server, "create", "api", "-l", "5", "--slot-decay-per-second", "2.5", "--disable"
    )
    assert result.code == 0, result.err
    info = (await admin.get_limit("api")).limit
    assert (info.limit, info.slot_decay_per_second, info.active) == (5, 2.5, False)
    assert "inactive" in result.out and "2.5/s" in result.out


async def test_ls_pattern_filters_and_empty_list_says_what_to_do(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    empty = await gcl(nats_server, "ls")
    assert empty.code == 0 and "gcl create" in empty.out
    await admin.create_limit("gpu:a", 1)
    await admin.create_limit("db", 1)
    result = await gcl(nats_server, "ls", "gpu:*", "--json")
    assert [info["name"] for info in json.loads(result.out)] == ["gpu:a"]


async def test_create_existing_is_a_user_error_unless_if_not_exists(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 3)
    again = await gcl(nats_server, "create", "db", "--limit", "9")
    assert again.code == 1
    assert "already exists" in again.err and "gcl update db" in again.err
    assert len(again.err.strip().splitlines()) == 1
    tolerant = await gcl(nats_server, "create", "db", "--limit", "9", "--if-not-exists")
    assert tolerant.code == 0 and "left unchanged" in tolerant.out
    assert (await admin.get_limit("db")).limit.limit == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["create", "bad name", "--limit", "1"], "whitespace"),
        (["create", "a*b", "--limit", "1"], "may not contain"),
        (["inspect", "bad name"], "whitespace"),
        (["update", "x/y", "--limit", "1"], "may not contain"),
        (["create", "db", "--limit", "-1"], "--limit"),
        (["create", "db", "--limit", "many"], "--limit"),
        (["create", "db"], "--limit"),
        (["update", "db", "--slot-decay-per-second", "-3"], "--slot-decay-per-second"),
        (["revoke", "not a lease"], "lease_id"),
    ],
)
async def test_invalid_input_exits_1_with_one_line(
    nats_server: NatsServer, coordinator: Coordinator, args: list[str], message: str
) -> None:
    result = await gcl(nats_server, *args)
    assert result.code == 1
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


# --- inspect -------------------------------------------------------------------------------


async def test_inspect_shows_figures_holders_and_queue(
    nats_server: NatsServer,
    client: AsyncClient,
    admin: AsyncAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_ID", "gpu-9")
    await admin.create_limit("gpu", 1)
    async with client.concurrency("gpu", label="train-7") as lease:
        waiting = asyncio.create_task(client.acquire("gpu", label="queued-run"))
        await wait_until(lambda: waiters(admin, "gpu"), 10)
        table = await gcl(nats_server, "inspect", "gpu")
        as_json = await gcl(nats_server, "inspect", "gpu", "--json")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert table.code == 0, table.err
    assert "1/1" in table.out and "██████████" in table.out
    holder_row = next(line for line in table.out.splitlines() if str(lease.lease_id) in line)
    for cell in ("gpu-9", socket.gethostname(), str(os.getpid()), "train-7"):
        assert cell in holder_row
    assert str(lease.fencing_token) in holder_row
    assert "waiting queue (1)" in table.out and "queued-run" in table.out
    detail = json.loads(as_json.out)
    assert detail["holders"][0]["lease_id"] == lease.lease_id
    assert detail["waiters"][0]["holder"]["label"] == "queued-run"


async def test_inspect_unknown_limit_exits_1(
    nats_server: NatsServer, coordinator: Coordinator
) -> None:
    result = await gcl(nats_server, "inspect", "nope")
    assert result.code == 1
    assert "no limit named 'nope'" in result.err and "gcl ls" in result.err


# --- update --------------------------------------------------------------------------------


async def test_update_changes_only_what_is_given(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 3, slot_decay_per_second=1.0)
    result = await gcl(nats_server, "update", "db", "--limit", "7")
    assert result.code == 0, result.err
    assert "updated limit 'db': 0/7" in result.out
    info = (await admin.get_limit("db")).limit
    assert (info.limit, info.slot_decay_per_second, info.active) == (7, 1.0, True)
    assert (await gcl(nats_server, "update", "db", "--disable")).code == 0
    assert (await admin.get_limit("db")).limit.active is False
    await gcl(nats_server, "update", "db", "--enable", "--slot-decay-per-second", "0")
    info = (await admin.get_limit("db")).limit
    assert (info.active, info.slot_decay_per_second) == (True, 0.0)


async def test_update_errors(nats_server: NatsServer, admin: AsyncAdminClient) -> None:
    await admin.create_limit("db", 3)
    nothing = await gcl(nats_server, "update", "db")
    assert nothing.code == 1 and "nothing to change" in nothing.err
    unknown = await gcl(nats_server, "update", "nope", "--limit", "2")
    assert unknown.code == 1 and "no limit named 'nope'" in unknown.err


# --- delete --------------------------------------------------------------------------------


async def test_delete_idle_limit_needs_no_confirmation(
    nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 3)
    result = await gcl(nats_server, "delete", "db")
    assert result.code == 0, result.err
    assert "deleted 'db'" in result.out
    with pytest.raises(LimitNotFound):
        await admin.get_limit("db")


async def test_delete_held_limit_without_an_answer_refuses(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 3)
    async with client.concurrency("db"):
        result = await gcl(nats_server, "delete", "db")
        assert result.code == 1
        assert "--yes" in result.err
        assert (await admin.get_limit("db")).limit.held == 1
        declined = await gcl(nats_server, "delete", "db", stdin="n\n")
        assert declined.code == 1 and "kept" in declined.err
        assert (await admin.get_limit("db")).limit.held == 1


@pytest.mark.parametrize("how", [["--yes"], ["-y"], []])
async def test_delete_held_limit_with_consent_revokes_holders(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient, how: list[str]
) -> None:
    await admin.create_limit("db", 3)
    with pytest.raises(LeaseLost):
        async with client.concurrency("db", occupy=2):
            result = await gcl(nats_server, "delete", "db", *how, stdin=None if how else "y\n")
            assert result.code == 0, result.err
            assert "1 lease(s) revoked" in result.out
    with pytest.raises(LimitNotFound):
        await admin.get_limit("db")


async def test_delete_unknown_limit_exits_1(
    nats_server: NatsServer, coordinator: Coordinator
) -> None:
    result = await gcl(nats_server, "delete", "nope", "--yes")
    assert result.code == 1 and "no limit named 'nope'" in result.err


# --- leases / revoke -----------------------------------------------------------------------


async def test_leases_lists_all_or_one_limit(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("db", 3)
    await admin.create_limit("gpu", 2)
    empty = await gcl(nats_server, "leases")
    assert empty.code == 0 and "no leases held" in empty.out
    async with (
        client.concurrency("db", label="query") as on_db,
        client.concurrency(["db", "gpu"], label="both") as on_both,
    ):
        every = await gcl(nats_server, "leases")
        gpu_only = await gcl(nats_server, "leases", "gpu", "--json")
    assert every.code == 0, every.err
    assert str(on_db.lease_id) in every.out and str(on_both.lease_id) in every.out
    assert "db, gpu" in every.out
    assert [lease["lease_id"] for lease in json.loads(gpu_only.out)] == [on_both.lease_id]
    unknown = await gcl(nats_server, "leases", "nope")
    assert unknown.code == 1 and "no limit named 'nope'" in unknown.err


async def test_revoke_frees_slots_and_the_holder_learns(
    nats_server: NatsServer, client: AsyncClient, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("gpu", 1)
    with pytest.raises(LeaseLost):
        async with client.concurrency("gpu") as lease:
            result = await gcl(nats_server, "revoke", str(lease.lease_id))
            assert result.code == 0, result.err
            assert f"revoked lease {lease.lease_id}" in result.out
            assert (await admin.get_limit("gpu")).limit.held == 0
    again = await gcl(nats_server, "revoke", str(lease.lease_id))
    assert again.code == 1 and "gcl leases" in again.err


# --- no coordinator ------------------------------------------------------------------------

EVERY_CLIENT_COMMAND = [
    ["ls"],
    ["inspect", "db"],
    ["create", "db", "--limit", "1"],
    ["update", "db", "--limit", "1"],
    ["delete", "db", "--yes"],
    ["leases"],
    ["revoke", "abc"],
    ["ping"],
]


@pytest.mark.parametrize("args", EVERY_CLIENT_COMMAND, ids=lambda a: a[0])
def test_nats_without_coordinator_exits_2(nats_server: NatsServer, args: list[str]) -> None:
    result = gcl_sync(nats_server.url, *args)
    assert result.code == 2
    assert nats_server.url in result.err and "gcl up" in result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", EVERY_CLIENT_COMMAND, ids=lambda a: a[0])
def test_nothing_listening_exits_2(args: list[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = gcl_sync(url, *args)
    assert result.code == 2
    assert url in result.err and "gcl up" in result.err


def test_real_entry_point_exit_codes(nats_server: NatsServer) -> None:
    unreachable = gcl_process(nats_server.url, "ls")
    assert unreachable.returncode == 2
    assert "gcl up" in unreachable.stderr
    invalid = gcl_process(nats_server.url, "create", "bad name", "--limit", "1")
    assert invalid.returncode == 1 and "whitespace" in invalid.stderr


async def test_ping_names_the_coordinator(
    nats_server: NatsServer, coordinator: Coordinator
) -> None:
    result = await gcl(nats_server, "ping")
    assert result.code == 0, result.err
    assert "answers on" in result.out and nats_server.url in result.out


# --- demo ----------------------------------------------------------------------------------


async def test_demo_creates_limits_moves_leases_and_cleans_up(
    nats_server: NatsServer, coordinator: Coordinator, admin: AsyncAdminClient
) -> None:
    task = asyncio.create_task(run_demo(coordinator.settings))

    async def busy() -> bool:
        names = {info.name for info in await admin.list_limits()}
        if not {spec.name for spec in DEMO_LIMITS} | {"gpu:gpu-1", "gpu:gpu-2"} <= names:
            return False
        gpu1 = await admin.get_limit("gpu:gpu-1")
        return gpu1.limit.held == 2 and gpu1.limit.waiters >= 1

    await wait_until(busy, 30, 0.1)
    holders = (await admin.get_limit("gpu:gpu-2")).holders
    assert {lease.holder.worker_id for lease in holders} <= {"gpu-2"}
    assert (await admin.get_limit("dry-run")).limit.active is False
    assert all(info.held <= info.limit for info in await admin.list_limits() if info.active)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: _no_leases(admin), 10)


async def _no_leases(admin: AsyncAdminClient) -> bool:
    return await admin.list_leases() == []


def test_every_registered_command_has_help() -> None:
    for name in cli.commands:
        result = gcl_sync("nats://127.0.0.1:4222", name, "--help")
        assert result.code == 0, (name, result.err)
        assert "Usage: gcl" in result.out


# --- Prefect's words: enable / disable, -o json ---------------------------------------------


async def test_enable_and_disable_switch_enforcement(
    coordinator: Coordinator, nats_server: NatsServer, admin: AsyncAdminClient
) -> None:
    await admin.create_limit("licence", 1)
    off = await gcl(nats_server, "disable", "licence")
    assert off.code == 0 and "disabled limit 'licence'" in off.out
    assert not (await admin.get_limit("licence")).limit.active
    on = await gcl(nats_server, "enable", "licence")
    assert on.code == 0 and "enabled limit 'licence'" in on.out
    assert (await admin.get_limit("licence")).limit.active
    missing = await gcl(nats_server, "enable", "ghost")
    assert missing.code == 1 and "ghost" in missing.err


@pytest.mark.parametrize("flag", [["--json"], ["-o", "json"], ["--output", "json"]])
async def test_every_json_spelling_prints_json(
    coordinator: Coordinator, nats_server: NatsServer, admin: AsyncAdminClient, flag: list[str]
) -> None:
    await admin.create_limit("db", 3)
    listed = await gcl(nats_server, "ls", *flag)
    assert listed.code == 0, listed.err
    assert [row["name"] for row in json.loads(listed.out)] == ["db"]
    inspected = await gcl(nats_server, "inspect", "db", *flag)
    assert json.loads(inspected.out)["limit"]["limit"] == 3
    leases = await gcl(nats_server, "leases", *flag)
    assert json.loads(leases.out) == []
    table = await gcl(nats_server, "ls", "-o", "table")
    assert table.code == 0 and not table.out.lstrip().startswith("[")


async def test_status_shows_the_leader_and_its_epoch(
    coordinator: Coordinator, nats_server: NatsServer
) -> None:
    shown = await gcl(nats_server, "status")
    assert shown.code == 0, shown.err
    assert coordinator.id in shown.out and "leader" in shown.out
    listed = json.loads((await gcl(nats_server, "status", "-o", "json")).out)
    assert [(s["coordinator_id"], s["role"]) for s in listed] == [(coordinator.id, "leader")]
    assert listed[0]["epoch"] == coordinator.store.epoch >= 1
