"""A client in another language: examples/node (the npm `nats` package) against the real thing.

It speaks only docs/protocol.md, as the worker role with gcl's NATS roles on, so this proves
the document is enough to write a client: secret, notify under its own inbox, keepalive,
wait.inspect, renew, release, and the loss notice. Skipped without `node`, or when the npm
package cannot be installed (no network and no npm cache).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gcl.coordinator.service import Coordinator
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.discovery import credential_file
from gcl.sdk.settings import ClientSettings
from tests.conftest import ROOT, wait_until
from tests.support.secure import Secured, secured_coordinator_fixture, secured_fixture

__all__ = ["secured_coordinator_fixture", "secured_fixture"]  # the fixtures of this module

EXAMPLE = ROOT / "examples" / "node"
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the example's packages installed from its package-lock.json."""
    binary = shutil.which("node")
    npm = shutil.which("npm")
    if binary is None or npm is None:
        pytest.skip("node and npm are not installed: the Node.js example is not run")
    if not (EXAMPLE / "node_modules" / "nats" / "package.json").exists():
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                cwd=EXAMPLE, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci took over 3 minutes (no network?): the Node.js example is not run")
        if done.returncode != 0:
            pytest.skip(f"npm ci could not install the `nats` package: {done.stderr[-500:]}")
    return binary


def env_for(secured: Secured, role: str = "worker") -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "GCL_NATS_URL": secured.url,
        "GCL_NATS_CREDENTIALS": str(credential_file(role, secured.folder)),
        "WORKER_ID": "node-1",
    }


async def start(node: str, secured: Secured, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        node, "acquire_release.mjs", *args,
        cwd=EXAMPLE, env=env_for(secured),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process) -> tuple[int, list[dict[str, Any]], str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    steps = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert process.returncode is not None
    return process.returncode, steps, err.decode()


@pytest.fixture
async def operator(secured: Secured, coordinator: Coordinator) -> AsyncAdminClient:
    async with AsyncAdminClient(secured.settings("operator")) as admin:
        yield admin


async def test_node_acquires_renews_and_releases(
    node: str, secured: Secured, operator: AsyncAdminClient
) -> None:
    await operator.create_limit("gpu:node-1", 1)
    code, steps, err = await finish(await start(node, secured, "gpu:node-1", "--hold", "1"))
    assert code == 0, (steps, err)
    assert [s["step"] for s in steps] == ["granted", "renewed", "released"]
    assert steps[0]["fencing_tokens"]["gpu:node-1"] > 0
    assert steps[1]["expires_in"] == 30 and steps[2]["released"] is True
    assert await operator.list_leases("gpu:node-1") == []


async def test_node_waits_says_who_blocks_it_and_is_pushed_its_grant(
    node: str, secured: Secured, operator: AsyncAdminClient
) -> None:
    await operator.create_limit("db", 1)
    async with AsyncClient(secured.settings("worker", ClientSettings), worker_id="py-9") as py:
        lease = await py.acquire("db")
        process = await start(node, secured, "db", "--hold", "0.2")
        await wait_until(lambda: _waiters(operator, "db", 1), timeout=RUN_TIMEOUT)
        await asyncio.sleep(2.5)  # past its first keepalive: it asks why it waits
        await py.release(lease)
        code, steps, err = await finish(process)
    assert code == 0, (steps, err)
    names = [s["step"] for s in steps]
    assert names[:3] == ["queued", "waiting", "granted"] and names[-1] == "released"
    (standing,) = steps[1]["standings"]
    assert standing["position"] == 0 and standing["holders"][0]["holder"]["worker_id"] == "py-9"


async def test_node_hears_of_a_revoke_at_once(
    node: str, secured: Secured, operator: AsyncAdminClient
) -> None:
    await operator.create_limit("job", 1)
    process = await start(node, secured, "job", "--hold", "30")
    await wait_until(lambda: _leases(operator, "job", 1), timeout=RUN_TIMEOUT)
    (lease,) = await operator.list_leases("job")
    assert lease.holder.label == "node example" and lease.holder.worker_id == "node-1"
    await operator.revoke_lease(lease.lease_id)
    code, steps, err = await finish(process)
    assert code == 3, (steps, err)
    lost = steps[-1]
    assert lost["step"] == "lost" and lost["actor"] == "gcl-operator"
    assert lost["reason"] == "revoked by an operator"


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


async def _leases(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.leases == count


def test_the_example_pins_its_packages() -> None:
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/nats"]["version"].startswith("2.")
    assert Path(EXAMPLE / ".gitignore").read_text().strip() == "node_modules/"
