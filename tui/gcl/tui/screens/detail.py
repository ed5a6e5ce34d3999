"""One limit in full: figures, occupancy trend, who holds it, who waits, what happened.

Holders and waiters are fetched with `get_limit` when the screen opens and again (at most
every `detail_refresh_seconds`) after an event touches this limit; figures come from the
board, so they move as fast as the table does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from gcl.protocol import LeaseInfo, LimitDetail, LimitInfo, WaiterInfo
from gcl.sdk import format as fmt
from gcl.sdk.exceptions import GCLError, LimitNotFound
from gcl.tui.messages import BoardChanged
from gcl.tui.model import fraction, saturated
from gcl.tui.widgets.event_log import EventLog
from gcl.tui.widgets.limits_table import bar_style, state_text
from gcl.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from gcl.tui.app import DashboardApp

MAX_ROWS = 500
HOLDER_COLUMNS = ("Lease", "Worker", "Host", "PID", "Label", "Slots", "Held for", "Expires in")
WAITER_COLUMNS = ("#", "Request", "Worker", "Host", "PID", "Label", "Slots", "Waiting")


class DetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "app.revoke_lease", "Revoke"),
        Binding("e", "app.edit_limit", "Edit"),
        Binding("plus,equals_sign", "app.adjust_slots(1)", "+slot", key_display="+"),
        Binding("minus", "app.adjust_slots(-1)", "-slot", key_display="-"),
        Binding("a", "app.toggle_active", "On/off"),
        Binding("d,delete", "app.delete_limit", "Delete"),
    ]

    def __init__(self, limit_name: str) -> None:
        super().__init__()
        self.limit_name = limit_name
        self.detail: LimitDetail | None = None
        self.fetched_at = 0.0
        self.problem: str | None = None
        self._dirty = False

    @property
    def dashboard(self) -> DashboardApp:
        return cast("DashboardApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(id="summary")
        yield Static(id="trend")
        with Vertical(id="people"):
            yield DataTable(id="holders", cursor_type="row")
            yield DataTable(id="waiters", cursor_type="none")
        yield EventLog(id="detail-events")
        yield Footer()

    def on_mount(self) -> None:
        holders = self.query_one("#holders", DataTable)
        holders.add_columns(*HOLDER_COLUMNS, f"Fencing ({self.limit_name})")
        self.query_one("#waiters", DataTable).add_columns(*WAITER_COLUMNS)
        holders.focus()
        self.redraw()
        self.reload()
        self.set_interval(self.dashboard.options.detail_refresh_seconds, self.tick)

    def selected_limit(self) -> str | None:
        return self.limit_name

    def selected_lease(self) -> LeaseInfo | None:
        holders = self.query_one("#holders", DataTable)
        if self.detail is None or not 0 <= holders.cursor_row < len(self.detail.holders):
            return None
        return self.detail.holders[holders.cursor_row]

    def on_board_changed(self, message: BoardChanged) -> None:
        if message.batch is not None and message.batch.touches(self.limit_name):
            self._dirty = True
        self.redraw(people=False)  # holders and waiters follow at the next tick

    def tick(self) -> None:
        """Refetch if something changed; otherwise just age the held-for clocks."""
        if self._dirty:
            self.reload()
        else:
            self.draw_people()

    def mark_dirty(self) -> None:
        self._dirty = True

    @work(exclusive=True, group="detail")
    async def reload(self) -> None:
        self._dirty = False
        try:
            self.detail = await self.dashboard.source.get_limit(self.limit_name)
            self.problem = None
        except LimitNotFound:
            self.detail = None
            self.problem = f"limit {self.limit_name!r} does not exist (deleted?); escape goes back"
        except GCLError as exc:
            self.problem = f"could not load holders: {exc}"
            self._dirty = True
        self.fetched_at = self.dashboard.options.clock()
        self.redraw()

    def redraw(self, people: bool = True) -> None:
        app = self.dashboard
        try:
            bar = self.query_one(StatusBar)
        except NoMatches:  # a reload finished as the screen closed: nothing left to paint
            return
        app.show_status(bar)
        info = app.board.limits.get(self.limit_name)
        if info is None and self.detail is not None:
            info = self.detail.limit
        self.query_one("#summary", Static).update(self.summary(info))
        history = app.board.history.get(self.limit_name, ())
        trend = Text.assemble(
            ("Peak occupancy per sample, oldest → newest (full height = all slots)\n", "dim"),
            (fmt.sparkline(history, 90), "cyan"),
        )
        self.query_one("#trend", Static).update(trend)
        if people:
            self.draw_people()
        self.query_one(EventLog).show(
            app.board.recent_events(name=self.limit_name), f"Recent events on {self.limit_name}"
        )

    def summary(self, info: LimitInfo | None) -> Text:
        if info is None:
            return Text(self.problem or f"loading {self.limit_name}…", style="bold")
        text = Text.assemble(
            (info.name, "bold"),
            "  ",
            (fmt.bar(fraction(info), width=20), bar_style(info)),
            f" {fmt.occupancy(info.occupied, info.limit)} occupied · {info.leases} leases · ",
            (f"{info.waiters} waiting", "bold red" if saturated(info) else ""),
            f" · {state_text(info)} · decay {fmt.rate(info.slot_decay_per_second)}",
            f" · denied {info.denied} · avg hold {fmt.duration(info.avg_occupancy_seconds)}",
            f" · fencing token {info.fencing_token}",
        )
        if saturated(info):
            text.append(
                "\nSATURATED: requests are queueing. Raise the slots with + or e, "
                "or revoke a stuck holder with r.",
                "bold red",
            )
        if self.problem:
            text.append("\n" + self.problem, "bold red")
        return text

    def draw_people(self) -> None:
        elapsed = max(0.0, self.dashboard.options.clock() - self.fetched_at)
        detail = self.detail
        holders = self.query_one("#holders", DataTable)
        waiters = self.query_one("#waiters", DataTable)
        row = holders.cursor_row
        holders.clear()
        waiters.clear()
        holders.border_title = f"Holders ({len(detail.holders) if detail else 0}) · r revokes"
        waiters.border_title = f"Waiting, in queue order ({len(detail.waiters) if detail else 0})"
        if detail is None:
            return
        now = self.dashboard.options.clock()
        for lease in detail.holders[:MAX_ROWS]:
            holders.add_row(*self.holder_cells(lease, now, elapsed), key=lease.lease_id)
        for waiter in detail.waiters[:MAX_ROWS]:
            waiters.add_row(*waiter_cells(waiter, elapsed), key=waiter.request_id)
        if 0 <= row < holders.row_count:
            holders.move_cursor(row=row, animate=False)

    def holder_cells(self, lease: LeaseInfo, now: float, elapsed: float) -> list[str]:
        h = lease.holder
        return [
            lease.lease_id,
            h.worker_id or "-",
            h.host or "-",
            str(h.pid or "-"),
            h.label or "-",
            str(lease.occupy),
            fmt.since(lease.granted_at, now),
            fmt.duration(lease.expires_in - elapsed) + (" long-lived" if lease.long_lived else ""),
            str(lease.fencing_tokens.get(self.limit_name, "-")),
        ]


def waiter_cells(waiter: WaiterInfo, elapsed: float) -> list[str]:
    h = waiter.holder
    return [
        str(waiter.position),
        waiter.request_id,
        h.worker_id or "-",
        h.host or "-",
        str(h.pid or "-"),
        h.label or "-",
        str(waiter.occupy),
        fmt.duration(waiter.waited_seconds + elapsed),
    ]
