"""compose.yaml and the Dockerfile agree with the code (no Docker engine runs here).

Commands are parsed by the real click group and the example's real argument parser, and
environment names are checked against the settings classes that read them.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from sqlalchemy.engine import make_url

from examples.per_worker_pipeline import parse_args
from gcl.cli.main import cli
from gcl.cli.service import STOP_SECONDS
from gcl.coordinator.nats_server import server_config
from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import MAX_PAYLOAD
from gcl.sdk.identity import worker_id
from gcl.sdk.settings import ClientSettings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GCL_SERVICES = [
    name for name, spec in SERVICES.items() if spec.get("image") == "gcl:local" and name != "auth"
]
WORKERS = ["worker-1", "worker-2"]
NATS_URLS = "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222"
READ_BY_CODE = (
    {f"GCL_{field.upper()}" for field in CoordinatorSettings.model_fields}
    | {f"GCL_{field.upper()}" for field in ClientSettings.model_fields}
    | {"WORKER_ID", "GCL_DATA_DIR"}
)


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def check_command(argv: list[str]) -> None:
    """Parse argv as the container would run it, without running it."""
    if argv[0] == "gcl":
        root = click.Context(cli, info_name="gcl")
        command = cli.get_command(root, argv[1])
        assert command is not None, f"`gcl {argv[1]}` is not a command"
        command.make_context(argv[1], argv[2:], parent=root)
    elif argv[0] == "python":
        script = ROOT / argv[1]
        assert script.is_file(), f"{argv[1]} does not exist"
        assert script.resolve() == (ROOT / "examples" / "per_worker_pipeline.py").resolve()
        parse_args(argv[2:])
    else:
        pytest.fail(f"unexpected program {argv[0]!r}")


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def test_every_service_is_there() -> None:
    expected = {"auth", "nats", "nats-2", "nats-3", "postgres", "coordinator", "coordinator-2"}
    expected |= {"limits", *WORKERS}
    assert expected <= set(SERVICES)
    assert set(GCL_SERVICES) == {"coordinator", "coordinator-2", "limits", *WORKERS}


def test_nats_runs_the_official_image_with_jetstream() -> None:
    nats = SERVICES["nats"]
    assert re.fullmatch(r"nats(:[\w.-]+)?", nats["image"])
    assert "-js" in as_argv(nats["command"])
    assert re.fullmatch(r"postgres(:[\w.-]+)?", SERVICES["postgres"]["image"])


def test_nats_gets_the_max_payload_gcl_up_sets(tmp_path: Path) -> None:
    """The same max_payload as `gcl up`'s NATS: gcl.protocol.MAX_PAYLOAD, not 1 MB. Compose's
    NATS reads the configuration `gcl auth init` writes into the auth volume."""
    from click.testing import CliRunner

    argv = as_argv(SERVICES["nats"]["command"])
    assert argv[argv.index("-c") + 1] == "/auth/nats-server.conf"
    assert "gcl auth init --out /auth" in as_argv(SERVICES["auth"]["command"])[0]
    made = CliRunner().invoke(cli, ["auth", "init", "--out", str(tmp_path)])
    assert made.exit_code == 0, made.output
    assert f"max_payload: {MAX_PAYLOAD}\n" in (tmp_path / "nats-server.conf").read_text()
    assert f"max_payload: {MAX_PAYLOAD}" in server_config()


def test_gcl_images_are_built_from_the_repo_dockerfile() -> None:
    for name in GCL_SERVICES:
        assert SERVICES[name]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("service", ["coordinator", "limits", *WORKERS])
def test_commands_and_health_checks_parse(service: str) -> None:
    check_command(as_argv(SERVICES[service]["command"]))
    test = SERVICES[service].get("healthcheck", {}).get("test")
    if test:
        assert test[0] == "CMD"
        check_command(test[1:])


def test_coordinator_serves_and_limits_creates_the_template_workers_use() -> None:
    assert as_argv(SERVICES["coordinator"]["command"]) == ["gcl", "serve"]
    create = as_argv(SERVICES["limits"]["command"])
    assert create[:2] == ["gcl", "create"] and "--if-not-exists" in create
    template, slots = create[2], create[create.index("--limit") + 1]
    assert slots == "2"
    for worker in WORKERS:
        args = parse_args(as_argv(SERVICES[worker]["command"])[2:])
        assert template == f"{args.resource}:{{worker_id}}"


@pytest.mark.parametrize("service", GCL_SERVICES)
def test_environment_names_are_ones_the_code_reads(service: str) -> None:
    unknown = set(environment(service)) - READ_BY_CODE
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"


def apply_environment(service: str, monkeypatch: pytest.MonkeyPatch, volume: Path) -> None:
    """Set a service's environment here, its /auth volume played by a folder of fakes."""
    for key, value in environment(service).items():
        if key == "GCL_NATS_CREDENTIALS":
            fake = volume / Path(value).name
            fake.write_text(f"GCL_NATS_USER=as-{fake.stem}\nGCL_NATS_PASSWORD=x\n")
            value = str(fake)
        monkeypatch.setenv(key, value)


def test_coordinator_settings_come_out_of_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    apply_environment("coordinator", monkeypatch, tmp_path)
    settings = CoordinatorSettings()
    assert settings.nats_url == NATS_URLS
    assert settings.db_url == environment("coordinator")["GCL_DB_URL"]
    assert settings.nats_user == "as-coordinator"  # read from its credential file


@pytest.mark.parametrize("service, expected", [("worker-1", "gpu-1"), ("worker-2", "gpu-2")])
def test_workers_have_their_own_worker_id(
    service: str, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    apply_environment(service, monkeypatch, tmp_path)
    assert worker_id() == expected
    assert ClientSettings().nats_url == NATS_URLS
    assert ClientSettings().nats_user == "as-worker"


def test_urls_point_at_the_compose_services() -> None:
    first = environment("coordinator")["GCL_NATS_URL"].split(",")[0]
    nats_url = make_url(first.replace("nats://", "x://"))
    assert (nats_url.host, nats_url.port) == ("nats", 4222)
    db = make_url(environment("coordinator")["GCL_DB_URL"])
    postgres = environment("postgres")
    assert db.drivername == "postgresql+psycopg"
    assert (db.host, db.port or 5432) == ("postgres", 5432)
    assert db.username == postgres["POSTGRES_USER"]
    assert db.password == postgres["POSTGRES_PASSWORD"]
    assert db.database == postgres["POSTGRES_DB"]
    assert any(
        "psycopg" in dep for dep in PYPROJECT["project"]["optional-dependencies"]["postgres"]
    )
    for service in GCL_SERVICES:
        assert environment(service)["GCL_NATS_URL"] == NATS_URLS


def test_the_coordinator_gets_time_to_stop_before_sigkill() -> None:
    """gcl serve stops within 10 s of SIGTERM (tests/test_shutdown.py); compose's default
    grace before SIGKILL is exactly 10 s, so give it more."""
    grace = SERVICES["coordinator"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > STOP_SECONDS


def test_start_order_waits_for_what_each_service_needs() -> None:
    def needs(service: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in SERVICES[service]["depends_on"].items()}

    assert needs("coordinator") == {"nats": "service_healthy", "postgres": "service_healthy"}
    assert needs("limits") == {"coordinator": "service_healthy"}
    for worker in WORKERS:
        assert needs(worker) == {"limits": "service_completed_successfully"}
    for service in ("nats", "postgres", "coordinator"):
        assert SERVICES[service]["healthcheck"]["test"]


# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def test_dockerfile_installs_the_package_and_runs_gcl_serve() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    runs = " ".join(rest for instruction, rest in steps if instruction == "RUN")
    assert re.search(r"pip install \./sdk [\"']?\.\[postgres\][\"']?", runs)
    assert ("CMD", '["gcl", "serve"]') in steps
    assert PYPROJECT["project"]["scripts"]["gcl"] == "gcl.cli.main:main"
    assert ("COPY", ". /app") in steps and ("WORKDIR", "/app") in steps


ROLE_OF = {"coordinator": "coordinator", "limits": "operator", "worker-1": "worker"}
ROLE_OF["coordinator-2"] = "coordinator"
ROLE_OF["worker-2"] = "worker"


def test_nats_runs_with_the_generated_users_and_permissions() -> None:
    nats = SERVICES["nats"]
    argv = as_argv(nats["command"])
    assert argv[argv.index("-c") + 1] == "/auth/nats-server.conf"
    assert "gcl-auth:/auth:ro" in nats["volumes"]
    assert nats["depends_on"]["auth"]["condition"] == "service_completed_successfully"


def test_the_auth_service_writes_credentials_into_a_volume_once() -> None:
    auth = SERVICES["auth"]
    script = as_argv(auth["command"])[0]
    guard, _, command = script.partition("||")
    assert guard.strip() == "test -f /auth/gcl-auth.conf"  # kept across `compose up`
    check_command(shlex.split(command))
    assert "gcl auth init --out /auth" in command
    assert auth["volumes"] == ["gcl-auth:/auth"] and "gcl-auth" in COMPOSE["volumes"]


def test_each_service_reads_only_its_own_roles_credential() -> None:
    for service, role in ROLE_OF.items():
        env = environment(service)
        assert env["GCL_NATS_CREDENTIALS"] == f"/auth/{role}.env", service
        assert not {"GCL_NATS_PASSWORD", "GCL_NATS_TOKEN"} & set(env)  # nothing inline
        assert "gcl-auth:/auth:ro" in SERVICES[service]["volumes"]


def test_no_credential_is_baked_into_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".gcl" in ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "auth" not in dockerfile.lower() and "PASSWORD" not in dockerfile


def test_three_nats_nodes_route_to_each_other_with_jetstream() -> None:
    names = []
    for node in ("nats", "nats-2", "nats-3"):
        argv = as_argv(SERVICES[node]["command"])
        assert "-js" in argv and argv[argv.index("-c") + 1] == "/auth/nats-server.conf"
        names.append(argv[argv.index("-n") + 1])
        routes = set(argv[argv.index("--routes") + 1].split(","))
        assert routes == {f"nats://{n}:6222" for n in ("nats", "nats-2", "nats-3")}
        assert argv[argv.index("--cluster_name") + 1] == "gcl"
    assert len(set(names)) == 3  # JetStream needs distinct server names
    data = {SERVICES[n]["volumes"][0].split(":")[0] for n in ("nats", "nats-2", "nats-3")}
    assert len(data) == 3  # each node its own store
    assert {u.split("//")[1].split(":")[0] for u in NATS_URLS.split(",")} == {
        "nats",
        "nats-2",
        "nats-3",
    }


def test_two_coordinators_share_the_database_and_restart_after_losing_the_lead() -> None:
    for name in ("coordinator", "coordinator-2"):
        spec = SERVICES[name]
        assert as_argv(spec["command"]) == ["gcl", "serve"]
        assert environment(name)["GCL_DB_URL"] == environment("coordinator")["GCL_DB_URL"]
        assert make_url(environment(name)["GCL_DB_URL"]).drivername == "postgresql+psycopg"
        assert spec["restart"] == "unless-stopped"  # exit 4 (deposed) comes back as a standby
