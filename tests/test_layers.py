"""The layer rules, enforced: who may import whom inside the one `gcl` namespace.

    gcl.protocol   the wire contract: imports neither side
    gcl.sdk, gcl.asyncio, gcl.sync
                   the worker's side: the contract and itself, never the coordinator, CLI or TUI
    gcl.tui, gcl.alerting
                   built on the SDK and the contract only
    gcl.coordinator.engine
                   the pure state machine: no I/O (no NATS, database, asyncio, threads, files)
    textual        only the dashboard loads it

Checked on the source (every import statement, also those inside functions) and, for Textual,
in a fresh interpreter, so a lazy import that slips through still fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PORTIONS = ("sdk", "coordinator", "cli", "tui", "alerting")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for portion in PORTIONS:
        base = ROOT / portion
        for path in (base / "gcl").rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement, at any depth of the file."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SystemError:
        # CPython 3.11 can fail with "AST constructor recursion depth mismatch" when another
        # thread compiled code meanwhile (gh-106905; seen once in a full run): a fresh
        # interpreter, with no other thread, parses it reliably.
        return _imports_in_fresh_interpreter(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports_in_fresh_interpreter(path: Path) -> set[str]:
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[2]); "
        "from tests.test_layers import imports_of; "
        "print(json.dumps(sorted(imports_of(__import__('pathlib').Path(sys.argv[1])))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout))


def layer(module: str) -> str:
    """`gcl.sdk.client` -> `gcl.sdk`; the SDK's two faces count as the SDK."""
    parts = module.split(".")
    if parts[:2] in (["gcl", "asyncio"], ["gcl", "sync"]):
        return "gcl.sdk"
    return ".".join(parts[:2])


ALLOWED: dict[str, set[str]] = {
    "gcl.protocol": {"gcl.protocol"},
    "gcl.sdk": {"gcl.sdk", "gcl.protocol"},
    "gcl.tui": {"gcl.tui", "gcl.sdk", "gcl.protocol"},
    "gcl.alerting": {"gcl.alerting", "gcl.sdk", "gcl.protocol"},
    "gcl.coordinator": {"gcl.coordinator", "gcl.sdk", "gcl.protocol"},
    "gcl.cli": {"gcl.cli", "gcl.sdk", "gcl.protocol", "gcl.coordinator", "gcl.alerting", "gcl.tui"},
}


def test_every_module_belongs_to_a_known_layer():
    found = modules()
    assert "gcl.protocol" in found and "gcl.coordinator.engine" in found  # the walk sees them
    assert {layer(m) for m in found} == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_imports_only_what_its_layer_may(module: str):
    mine = layer(module)
    wrong = sorted(
        name
        for name in imports_of(modules()[module])
        if name.startswith("gcl.") and layer(name) not in ALLOWED[mine]
    )
    assert not wrong, f"{module} ({mine}) may not import {wrong}"


def test_the_layer_check_catches_a_forbidden_import():
    assert layer("gcl.coordinator.engine") not in ALLOWED["gcl.sdk"]
    assert layer("gcl.sync") == "gcl.sdk"
    source = ast.parse("def f():\n    from gcl.coordinator import engine\n")
    found = {n.module for n in ast.walk(source) if isinstance(n, ast.ImportFrom)}
    assert found == {"gcl.coordinator"}


NO_IO = ("nats", "sqlalchemy", "sqlmodel", "asyncio", "threading", "socket", "subprocess", "os")


def test_the_engine_does_no_io():
    engine_modules = ["gcl.coordinator.engine", "gcl.coordinator.waiters"]
    engine_modules += ["gcl.coordinator.leases", "gcl.coordinator.limits"]
    engine_modules += ["gcl.coordinator.changes", "gcl.coordinator.clock"]
    for module in engine_modules:
        names = imports_of(modules()[module])
        bad = sorted(n for n in names if n.split(".")[0] in NO_IO)
        assert not bad, f"{module} is part of the pure engine but imports {bad}"


def test_only_the_dashboard_imports_textual_in_source():
    for module, path in modules().items():
        if layer(module) == "gcl.tui" or module == "gcl.cli.dashboard":
            continue
        textual = [n for n in imports_of(path) if n.split(".")[0] == "textual"]
        assert not textual, f"{module} imports {textual}"


def loaded_after(imports: str) -> set[str]:
    code = f"import sys; import {imports}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


CORE = (
    "gcl.coordinator, gcl.coordinator.service, gcl.sdk, gcl.sdk.client, gcl.sdk.admin, "
    "gcl.sdk.events, gcl.asyncio, gcl.sync, gcl.cli.main"
)


def test_core_and_cli_do_not_load_textual():
    loaded = loaded_after(CORE)
    assert "gcl.cli.dashboard" in loaded  # the dashboard command itself is registered...
    assert "textual" not in loaded  # ...but Textual loads only when it runs
    assert not any(m.startswith("gcl.tui") for m in loaded)


def test_the_worker_sdk_loads_no_server_package():
    loaded = loaded_after("gcl.asyncio, gcl.sync, gcl.sdk")
    server = {"sqlalchemy", "sqlmodel", "textual", "prometheus_client", "click", "rich"}
    assert not server & {m.split(".")[0] for m in loaded}
    assert not any(m.startswith(("gcl.coordinator", "gcl.cli", "gcl.tui")) for m in loaded)


def test_the_dashboard_does_load_textual():
    assert "textual" in loaded_after("gcl.tui.app")  # so the checks above can fail


def test_serve_does_not_load_what_it_never_uses():
    """An idle `gcl serve` holds every module it imported (bench/memory.py: ≤ 60 MB RSS), so the
    CLI's tables (rich), alerting, the dashboard and Prometheus (only with --metrics-port) load
    when their command or option is used, not with the command line; the store's tables are
    SQLAlchemy Core, so neither sqlmodel nor SQLAlchemy's ORM loads at all."""
    loaded = loaded_after("gcl.cli.main, gcl.cli.service, gcl.coordinator.service")
    unused = {"textual", "rich", "prometheus_client", "sqlmodel"}
    assert not unused & {m.split(".")[0] for m in loaded}
    assert "sqlalchemy.orm" not in loaded
    assert not any(
        m.startswith(("gcl.alerting", "gcl.tui", "gcl.coordinator.prometheus")) for m in loaded
    )
