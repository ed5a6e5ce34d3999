"""Every attack from issue #9, against a real nats-server with the configuration gcl ships.

The server runs with `nats_auth.roles_config` (one user per role, least privilege, a private
inbox prefix each) and the coordinator with the coordinator's credential. Each attack is made
with the credential an attacker would have (a worker's, or an operator's where that is the
point) and must be refused, by NATS or by the coordinator, while the victim keeps its lease.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.errors import NoServersError

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import ACQUIRE as ACQUIRE_OP
from gcl.protocol import RELEASE as RELEASE_OP
from gcl.protocol import RENEW as RENEW_OP
from gcl.protocol import WAIT_KEEPALIVE as KEEPALIVE_OP
from gcl.protocol import WAIT_WITHDRAW as WITHDRAW_OP
from gcl.protocol import AcquireRequest, Event, HeldLease, RequestRef, Withdraw
from gcl.sdk import (
    AsyncAdminClient,
    AsyncClient,
    ClientSettings,
    Forbidden,
    InvalidRequest,
    LeaseLost,
    NatsSettings,
    PermissionDenied,
)
from gcl.sdk.discovery import credential_file
from gcl.sdk.events import events
from gcl.sdk.transport import Rpc
from tests.support.secure import PREFIX, Secured, secured_coordinator_fixture, secured_fixture

__all__ = ["secured_coordinator_fixture", "secured_fixture"]  # the fixtures of this module


@pytest.fixture
async def operator(secured: Secured, coordinator: Coordinator) -> AsyncIterator[AsyncAdminClient]:
    async with AsyncAdminClient(secured.settings("operator")) as admin:
        await admin.create_limit("gpu", 1)
        yield admin


@pytest.fixture
async def victim(secured: Secured, coordinator: Coordinator) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(secured.settings("worker", ClientSettings)) as client:
        yield client


async def stored_events(secured: Secured) -> list[Event]:
    """Every event in the stream, read as an observer."""
    settings = secured.settings("observer")
    return [e async for e in events(settings=settings, since=60, follow=False)]


async def settle() -> None:
    await asyncio.sleep(0.3)  # NATS reports a permissions violation asynchronously


# --- identity: no credential, no entry -------------------------------------------------------


async def test_a_connection_without_credentials_is_refused(secured: Secured):
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    with pytest.raises((NoServersError, nats.errors.Error)):
        connecting = nats.connect(
            secured.url, error_cb=on_error, allow_reconnect=False, connect_timeout=2
        )
        await asyncio.wait_for(connecting, 10)
    assert any("authorization violation" in e for e in errors)
    with pytest.raises(PermissionDenied, match="refused"):
        async with AsyncAdminClient(NatsSettings(nats_url=secured.url)) as admin:
            await admin.ping()


async def test_a_wrong_password_is_a_clear_permission_error(secured: Secured, coordinator):
    settings = NatsSettings(nats_url=secured.url, nats_user="gcl-worker", nats_password="nope")
    with pytest.raises(PermissionDenied, match="refused"):
        async with AsyncAdminClient(settings) as admin:
            await admin.ping()


def test_secrets_never_show_in_a_repr(secured: Secured):
    settings = secured.settings("worker")
    password = secured.credentials["worker"].password
    assert password not in repr(settings) and password not in str(settings.model_dump())
    request = AcquireRequest(request_id="r", secret="s" * 20, names=["gpu"])
    assert "s" * 20 not in repr(request)


# --- roles: what each may and may not do ----------------------------------------------------


async def test_a_worker_cannot_call_admin_operations(secured: Secured, operator):
    async with AsyncAdminClient(secured.settings("worker")) as admin:
        with pytest.raises(PermissionDenied, match="another gcl role"):
            await admin.delete_limit("gpu")
        with pytest.raises(PermissionDenied):
            await admin.list_leases()
    assert (await operator.get_limit("gpu")).limit.limit == 1


async def test_an_observer_reads_but_cannot_change(secured: Secured, operator):
    async with AsyncAdminClient(secured.settings("observer")) as observer:
        assert [info.name for info in await observer.list_limits()] == ["gpu"]
        assert (await observer.ping()).coordinator_id
        with pytest.raises(PermissionDenied):
            await observer.delete_limit("gpu")
        with pytest.raises(PermissionDenied):
            await observer.update_limit("gpu", limit=5)
    assert (await operator.get_limit("gpu")).limit.limit == 1


async def test_an_observer_reads_the_event_stream(secured: Secured, operator):
    await operator.create_limit("seen", 2)
    got = []
    async for event in events(settings=secured.settings("observer"), since=60, follow=False):
        got.append(event.kind)
    assert "limit.created" in got


async def test_a_bare_publish_to_an_admin_subject_deletes_nothing(secured: Secured, operator):
    errors: list[str] = []
    worker = await secured.raw("worker", errors)
    op_conn = await secured.raw("operator", [])
    try:
        await worker.publish(f"{PREFIX}.admin.limit.delete", b'{"name": "gpu"}')
        await op_conn.publish(f"{PREFIX}.admin.limit.delete.gcl-operator", b'{"name": "gpu"}')
        await worker.flush()
        await op_conn.flush()
        await settle()
    finally:
        await worker.close()
        await op_conn.close()
    assert any("permissions violation" in e for e in errors)
    assert (await operator.get_limit("gpu")).limit.limit == 1  # the reply-less one was dropped


async def test_nobody_but_the_coordinator_answers_or_listens_on_requests(
    secured: Secured, operator, victim: AsyncClient
):
    for role in ("worker", "operator", "observer"):
        errors: list[str] = []
        conn = await secured.raw(role, errors)
        heard: list[bytes] = []

        async def overhear(msg: Any, heard: list[bytes] = heard) -> None:
            heard.append(msg.data)

        try:
            for subject in (f"{PREFIX}.acquire", f"{PREFIX}.admin.ping", f"{PREFIX}.>"):
                await conn.subscribe(subject, cb=overhear)
            await conn.flush()
            await settle()
            async with victim.concurrency("gpu"):
                pass
            await asyncio.sleep(0.2)
        finally:
            await conn.close()
        assert heard == [], f"{role} overheard requests"
        assert sum("permissions violation for subscription" in e for e in errors) == 3, role


async def test_nobody_but_the_coordinator_publishes_events(secured: Secured, operator):
    errors: list[str] = []
    conn = await secured.raw("operator", errors)
    fake = {"v": 2, "kind": "lease.expired", "at": 1.0, "names": ["gpu"]}
    try:
        await conn.publish(f"{PREFIX}.events.lease.expired", json.dumps(fake).encode())
        await conn.flush()
        await settle()
    finally:
        await conn.close()
    assert any("permissions violation for publish" in e for e in errors)
    stored = [
        e async for e in events(settings=secured.settings("observer"), since=60, follow=False)
    ]
    assert "lease.expired" not in [e.kind for e in stored]


async def test_a_worker_cannot_read_other_inboxes(secured: Secured):
    errors: list[str] = []
    conn = await secured.raw("worker", errors)
    try:
        for subject in ("_INBOX.>", "_GCL_INBOX.>", "_GCL_INBOX.mallory.>"):
            await conn.subscribe(subject)
        await conn.flush()
        await settle()
    finally:
        await conn.close()
    assert sum("permissions violation for subscription" in e for e in errors) == 3


# --- ownership: a lease is its holder's ---------------------------------------------------


async def test_another_client_cannot_renew_or_release_a_victims_lease(
    secured: Secured, operator, victim: AsyncClient
):
    async with AsyncClient(secured.mallory_settings()) as thief:
        rpc: Rpc = await thief._ready()
        async with victim.concurrency("gpu", lease_ttl=2) as lease:
            assert lease.lease_id is not None
            forged = HeldLease(lease_id=lease.lease_id, secret="guessed-secret-0123456789")
            with pytest.raises(Forbidden, match="secret"):
                await rpc.call(RENEW_OP, forged)
            with pytest.raises(Forbidden):
                await rpc.call(RELEASE_OP, forged)
            await asyncio.sleep(2.5)  # past one TTL: the victim's own renewals kept it
            listed = await operator.list_leases("gpu")
            assert [x.lease_id for x in listed] == [lease.lease_id]
        await victim.flush_releases()  # the exit sent the release; wait for its reply
        assert not lease.lost  # the block exited normally, and its release succeeded
        assert victim.release_failures == victim.late_losses == 0
    assert await operator.list_leases("gpu") == []


async def test_a_replayed_request_id_gets_nothing_of_the_victims(
    secured: Secured, operator, victim: AsyncClient
):
    await operator.create_limit("other", 5)
    async with AsyncClient(secured.mallory_settings()) as thief:
        rpc: Rpc = await thief._ready()
        async with victim.concurrency("gpu") as lease:
            request_id = lease.info.request_id if lease.info else ""
            replay = AcquireRequest(
                request_id=request_id, secret="thief-secret-0123456789", names=["other"]
            )
            with pytest.raises(InvalidRequest, match="already used"):
                await rpc.call(ACQUIRE_OP, replay)
            withdraw = Withdraw(request_id=request_id, secret="thief-secret-0123456789")
            with pytest.raises(Forbidden):
                await rpc.call(WITHDRAW_OP, withdraw)
            keepalive = RequestRef(request_id=request_id, secret="thief-secret-0123456789")
            with pytest.raises(Forbidden):
                await rpc.call(KEEPALIVE_OP, keepalive)
            assert [x.lease_id for x in await operator.list_leases("gpu")] == [lease.lease_id]
        assert not lease.lost


async def test_notify_may_not_point_outside_the_requesters_inbox(
    secured: Secured, operator, victim: AsyncClient
):
    rpc: Rpc = await victim._ready()
    for target in ("gcl.events.lease.revoked", "_GCL_INBOX.gcl-operator.abc", "gcl.acquire"):
        request = AcquireRequest(
            request_id=f"aim-{len(target)}",
            secret="aiming-secret-0123456789",
            names=["gpu"],
            notify=target,
        )
        with pytest.raises(Forbidden, match="notify"):
            await rpc.call(ACQUIRE_OP, request)
    assert await operator.list_leases("gpu") == []


async def test_admin_events_name_the_nats_user_who_asked(secured: Secured, operator):
    await operator.update_limit("gpu", limit=3)
    stored = [
        e async for e in events(settings=secured.settings("observer"), since=60, follow=False)
    ]
    changes = [e for e in stored if e.kind in ("limit.created", "limit.updated")]
    assert changes and {e.actor for e in changes} == {"gcl-operator"}


async def test_an_operator_revokes_and_the_holder_hears_of_it(
    secured: Secured, operator, victim: AsyncClient
):
    with pytest.raises(LeaseLost, match="revoked"):
        async with victim.concurrency("gpu", lease_ttl=3) as lease:
            assert lease.lease_id is not None
            await operator.revoke_lease(lease.lease_id)
            for _ in range(100):
                if lease.lost:
                    break
                await asyncio.sleep(0.05)
    assert lease.lost


# --- `gcl auth init`: a production deployment's files ---------------------------------------


def test_auth_init_writes_a_valid_private_configuration(tmp_path: Path):
    from click.testing import CliRunner

    from gcl.cli.main import cli
    from gcl.coordinator.nats_server import nats_server_binary

    out = tmp_path / "auth"
    result = CliRunner().invoke(cli, ["auth", "init", "--out", str(out), "--worker", "gpu-1"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {
        "gcl-auth.conf",
        "nats-server.conf",
        "coordinator.env",
        "operator.env",
        "observer.env",
        "worker.env",
        "worker-gpu-1.env",
    }
    assert all(p.stat().st_mode & 0o077 == 0 for p in out.iterdir())  # owner-only
    checked = subprocess.run(
        [nats_server_binary(), "-c", str(out / "nats-server.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = CliRunner().invoke(cli, ["auth", "init", "--out", str(out)])
    assert again.exit_code != 0 and "--force" in again.output  # never overwritten silently


async def test_auth_init_credentials_work_against_its_configuration(tmp_path: Path):
    from click.testing import CliRunner

    from gcl.cli.main import cli

    out = tmp_path / "auth"
    assert (
        CliRunner().invoke(cli, ["auth", "init", "--out", str(out), "--worker", "gpu-1"]).exit_code
        == 0
    )
    server = NatsServer(tmp_path / "nats", config=(out / "gcl-auth.conf").read_text()).start()
    try:

        def settings(name: str, cls: type[NatsSettings] = NatsSettings, **kw: Any) -> Any:
            return cls(nats_url=server.url, nats_credentials=out / name, **kw)

        coordinator = Coordinator(
            settings(
                "coordinator.env", CoordinatorSettings, db_url=f"sqlite:///{tmp_path / 'g.db'}"
            )
        )
        await coordinator.start()
        try:
            async with AsyncAdminClient(settings("operator.env")) as operator:
                await operator.create_limit("gpu", 1)
            worker = AsyncClient(settings("worker-gpu-1.env", ClientSettings))
            async with worker, worker.concurrency("gpu") as lease:
                assert lease.fencing_token is not None
            async with AsyncAdminClient(settings("worker-gpu-1.env")) as not_admin:
                with pytest.raises(PermissionDenied):
                    await not_admin.delete_limit("gpu")
        finally:
            await coordinator.stop()
    finally:
        server.stop()


async def test_the_cli_takes_a_credential_file_and_a_role_by_flag(
    secured: Secured, operator: AsyncAdminClient, tmp_path: Path
):
    import os
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "GCL_DATA_DIR": str(tmp_path / "none")}
    env.pop("GCL_NATS_CREDENTIALS", None)

    def gcl(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gcl.cli", "--nats", secured.url, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    observer = str(credential_file("observer", secured.folder))
    worker = str(credential_file("worker", secured.folder))
    listed = await asyncio.to_thread(gcl, "--credentials", observer, "ls", "--json")
    assert listed.returncode == 0 and '"gpu"' in listed.stdout, listed.stderr
    refused = await asyncio.to_thread(gcl, "--credentials", worker, "delete", "gpu", "--yes")
    assert refused.returncode == 1 and "another gcl role" in refused.stderr
    missing = await asyncio.to_thread(gcl, "--credentials", str(tmp_path / "nope.env"), "ls")
    assert missing.returncode == 1 and "nope.env" in missing.stderr
