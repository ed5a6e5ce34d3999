"""The live table of limits: one row per limit, redrawn only where figures changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
from textual.widgets import DataTable

from gcl.protocol import LimitInfo
from gcl.sdk import format as fmt
from gcl.tui.model import fraction, saturated

TREND_WIDTH = 24
BAR_WIDTH = 10
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Limit"),
    ("occupancy", "Occupied"),
    ("waiters", "Waiters"),
    ("state", "State"),
    ("decay", "Decay"),
    ("denied", "Denied"),
    ("hold", "Avg hold"),
    ("trend", "Occupancy trend"),
)


def row_style(info: LimitInfo) -> str:
    if saturated(info):
        return "bold red"
    if not info.active:
        return "dim"
    return ""


def bar_style(info: LimitInfo) -> str:
    share = fraction(info)
    if not info.active:
        return "dim"
    if share >= 1.0:
        return "red"
    return "yellow" if share >= 0.7 else "green"


def state_text(info: LimitInfo) -> str:
    if info.is_template:
        return "template"
    if not info.active:
        return "inactive"
    return "SATURATED" if saturated(info) else "active"


def render_row(info: LimitInfo, history: Iterable[float]) -> list[Text]:
    """The cells of one limit's row, styled so saturated rows stand out and inactive dim."""
    style = row_style(info)
    occupancy = Text.assemble(
        (fmt.bar(fraction(info), width=BAR_WIDTH), bar_style(info)),
        f" {fmt.occupancy(info.occupied, info.limit)}",
        style=style,
    )
    hold = fmt.duration(info.avg_occupancy_seconds) if info.avg_occupancy_seconds else "-"
    return [
        Text(info.name, style=style),
        occupancy,
        Text(str(info.waiters), style=style, justify="right"),
        Text(state_text(info), style=style),
        Text(fmt.rate(info.slot_decay_per_second), style=style, justify="right"),
        Text(str(info.denied), style=style, justify="right"),
        Text(hold, style=style, justify="right"),
        Text(fmt.sparkline(history, TREND_WIDTH), style=style or "cyan"),
    ]


class LimitsTable(DataTable[Text]):
    """Rows keyed by limit name; the cursor stays on the same limit across re-sorts."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._order: list[str] = []
        self._signatures: dict[str, tuple[LimitInfo, str]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_name(self) -> str | None:
        if 0 <= self.cursor_row < len(self._order):
            return self._order[self.cursor_row]
        return None

    def show(self, rows: list[LimitInfo], history: Mapping[str, Iterable[float]]) -> None:
        """Make the table show `rows` in this order, touching only what changed."""
        order = [info.name for info in rows]
        signatures = {
            info.name: (info, fmt.sparkline(history.get(info.name, ()), TREND_WIDTH))
            for info in rows
        }
        if order != self._order:
            self._rebuild(rows, history, order)
        else:
            for info in rows:
                if signatures[info.name] != self._signatures.get(info.name):
                    cells = render_row(info, history.get(info.name, ()))
                    for (column, _), cell in zip(COLUMNS, cells, strict=True):
                        self.update_cell(info.name, column, cell, update_width=True)
        self._signatures = signatures

    def _rebuild(
        self, rows: list[LimitInfo], history: Mapping[str, Iterable[float]], order: list[str]
    ) -> None:
        selected = self.selected_name
        self.clear()
        for info in rows:
            self.add_row(*render_row(info, history.get(info.name, ())), key=info.name)
        self._order = order
        if selected in order:
            self.move_cursor(row=order.index(selected), animate=False)

    def select_name(self, name: str) -> bool:
        if name not in self._order:
            return False
        self.move_cursor(row=self._order.index(name), animate=False)
        return True
