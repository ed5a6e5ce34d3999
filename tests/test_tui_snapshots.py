"""Snapshot tests of the dashboard's look, on fixed demo data: no server, no clock.

`pytest --snapshot-update tests/test_tui_snapshots.py` re-records them after a deliberate
change to the look; review the SVGs in tests/__snapshots__/ before committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from gcl.tui.app import DashboardApp
from gcl.tui.screens.detail import DetailScreen
from tests.conftest import wait_until
from tests.support.screenshot import demo_app, settle

SIZE = (150, 36)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times are local times: pin the zone so the pictures are the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def loaded(pilot: Pilot[Any]) -> None:
    await settle(pilot.app, pilot)  # type: ignore[arg-type]


async def detail_open(pilot: Pilot[Any]) -> None:
    app: DashboardApp = pilot.app  # type: ignore[assignment]
    await settle(app, pilot)
    await pilot.press("down", "enter")  # the second row, gpu:gpu-1, is the saturated one
    await wait_until(lambda: isinstance(app.screen, DetailScreen), timeout=5)
    screen = app.screen
    assert isinstance(screen, DetailScreen)
    await wait_until(lambda: screen.detail is not None, timeout=5)
    await pilot.pause()


def test_main_screen(snap_compare: Callable[..., bool]):
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=loaded)


def test_main_screen_sorted_by_occupancy_and_filtered(snap_compare: Callable[..., bool]):
    async def sorted_filtered(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("s", "slash", "g", "p", "u", "enter")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=sorted_filtered)


def test_detail_screen(snap_compare: Callable[..., bool]):
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=detail_open)


def test_delete_confirmation(snap_compare: Callable[..., bool]):
    async def confirm(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("down", "d")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=confirm)
