"""`python -m tests.support.screenshot docs/dashboard.svg`: the README picture, from demo data.

Times are printed in UTC and the clock is frozen, so the picture only changes when the
dashboard's look does.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from textual.pilot import Pilot

from gcl.tui.app import DashboardApp, Options
from gcl.tui.feed import Status
from tests.support import demo_data

SIZE = (150, 30)


def demo_app() -> DashboardApp:
    options = Options(sample_seconds=0, clock=lambda: demo_data.NOW)
    return DashboardApp(demo_data.source(), options, board=demo_data.board())


async def settle(app: DashboardApp, pilot: Pilot[None], timeout: float = 10.0) -> None:
    """Wait (bounded) until the fixed data is loaded and every event is in the log."""
    wanted = len(demo_data.details()), len(demo_data.events())
    deadline = time.monotonic() + timeout
    while (len(app.board.limits), len(app.board.events)) != wanted or (
        app.link.status is not Status.CONNECTED
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the demo data did not load into the dashboard")
        await pilot.pause(0.02)
    await pilot.pause()


async def capture(path: Path, detail: bool = False) -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        if detail:
            app.open_detail("gpu:gpu-1")
            await pilot.pause(0.3)
        path.write_text(app.export_screenshot(title="gcl dashboard"))


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.svg")
    asyncio.run(capture(target, detail="--detail" in sys.argv))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
