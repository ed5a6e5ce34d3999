"""Only the dashboard imports Textual: workers and the coordinator never pay for it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CORE = "coordinator, coordinator.service, sdk, sdk.client, sdk.admin, sdk.events, cli.main"


def loaded_after(imports: str) -> set[str]:
    code = f"import sys; import {imports}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_core_and_cli_do_not_import_textual():
    modules = loaded_after(CORE)
    assert "cli.dashboard" in modules  # the dashboard command itself is registered...
    assert "textual" not in modules  # ...but Textual loads only when it runs
    assert not any(m.startswith("tui") for m in modules)


def test_the_dashboard_does_import_textual():
    assert "textual" in loaded_after("tui.app")  # so the check above can fail
