"""The operator dashboard (Textual). Only this package imports Textual.

from gcl.tui import run_dashboard
run_dashboard(NatsSettings(nats_url="nats://127.0.0.1:4222"))
"""

from __future__ import annotations

import logging

from textual.logging import TextualHandler

from gcl.sdk.settings import NatsSettings
from gcl.tui.app import DashboardApp, Options
from gcl.tui.source import NatsSource

__all__ = ["DashboardApp", "Options", "run_dashboard"]


def run_dashboard(
    settings: NatsSettings, read_only: bool = False, configure_logging: bool = True
) -> None:
    """Run in this terminal until the operator quits. Logs go to Textual's devtools console,
    unless the caller (`gcl up --dashboard`, logging to a file) set logging up already."""
    if configure_logging:
        logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
    DashboardApp(NatsSource(settings), Options(read_only=read_only)).run()
