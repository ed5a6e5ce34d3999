"""The main screen: status, filter, the live limits table and the event log."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input

from gcl.protocol import EVENT_KINDS
from gcl.tui.messages import BoardChanged
from gcl.tui.model import SORTS
from gcl.tui.widgets.event_log import EventLog
from gcl.tui.widgets.limits_table import LimitsTable
from gcl.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from gcl.tui.app import DashboardApp

KIND_FILTERS: tuple[str | None, ...] = (
    None,
    "lease",
    "waiter",
    "limit",
    "coordinator",
    *EVENT_KINDS,
)


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "app.create_limit", "New"),
        Binding("e", "app.edit_limit", "Edit"),
        Binding("plus,equals_sign", "app.adjust_slots(1)", "+slot", key_display="+"),
        Binding("minus", "app.adjust_slots(-1)", "-slot", key_display="-"),
        Binding("a", "app.toggle_active", "On/off"),
        Binding("d,delete", "app.delete_limit", "Delete"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("k", "cycle_kind", "Kinds"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort = "name"
        self.pattern = ""
        self.kind: str | None = None
        self._stale = False

    @property
    def dashboard(self) -> DashboardApp:
        return cast("DashboardApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Input(placeholder="/ filter by name: gpu, or a pattern such as gpu:*", id="filter")
        yield LimitsTable(id="limits")
        yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LimitsTable).focus()
        self.redraw()

    def selected_limit(self) -> str | None:
        return self.query_one(LimitsTable).selected_name

    def on_board_changed(self, message: BoardChanged) -> None:
        if self.is_current:
            self.redraw()
        else:
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale:
            self._stale = False
            self.redraw()

    def redraw(self) -> None:
        app = self.dashboard
        app.show_status(self.query_one(StatusBar))
        rows = app.board.view(self.pattern, self.sort)
        table = self.query_one(LimitsTable)
        table.show(rows, app.board.history)
        shown = f"{len(rows)} of {len(app.board.limits)}" if self.pattern else str(len(rows))
        title = f"Limits ({shown}) · sorted by {self.sort}"
        if self.pattern:
            title += f" · filter {self.pattern!r}"
        table.border_title = title
        kind = f"{self.kind}*" if self.kind and "." not in self.kind else self.kind
        self.query_one(EventLog).show(
            app.board.recent_events(self.kind),
            f"Events, newest first · {kind or 'all kinds'} (k)",
        )

    @on(DataTable.RowSelected, "#limits")
    def open_detail(self, event: DataTable.RowSelected) -> None:
        self.dashboard.open_detail(str(event.row_key.value))

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value
        self.redraw()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(LimitsTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_cycle_sort(self) -> None:
        self.set_sort(SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)])

    def set_sort(self, sort: str) -> None:
        self.sort = sort
        self.redraw()

    def action_cycle_kind(self) -> None:
        self.set_kind(KIND_FILTERS[(KIND_FILTERS.index(self.kind) + 1) % len(KIND_FILTERS)])

    def set_kind(self, kind: str | None) -> None:
        self.kind = kind
        self.redraw()

    def key_escape(self) -> None:
        if self.focused is self.query_one("#filter", Input):
            self.query_one(LimitsTable).focus()
