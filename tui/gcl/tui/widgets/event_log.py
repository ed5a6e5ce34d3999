"""The event log pane: the latest events, newest first, optionally of one kind or one limit."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from gcl.protocol import Event
from gcl.sdk import format as fmt

KIND_STYLES = {
    "lease.granted": "green",
    "lease.released": "cyan",
    "lease.expired": "bold yellow",
    "lease.revoked": "bold magenta",
    "waiter.queued": "yellow",
    "waiter.timed_out": "red",
    "waiter.withdrawn": "dim",
    "waiter.rejected": "red",
    "limit.created": "bold blue",
    "limit.updated": "blue",
    "limit.deleted": "bold red",
    "coordinator.started": "bold",
}
SHOWN = 100


def describe(event: Event) -> Text:
    """One line: when, what, on which limits, who, and why."""
    line = Text.assemble(
        (fmt.clock_time(event.at), "dim"),
        " ",
        (f"{event.kind:<20}", KIND_STYLES.get(event.kind, "")),
        " ",
        (", ".join(event.names), "bold"),
    )
    who = fmt.holder(event.holder, unknown="")
    if who:
        line.append(f"  {who}")
    if event.occupy:
        line.append(f"  {event.occupy} slot(s)")
    if event.long_lived:
        line.append("  long-lived", "bold")
    if event.reason:
        line.append(f"  {event.reason}", "italic")
    return line


class EventLog(VerticalScroll):
    """Rendered from the board on demand; the title says which filter is on."""

    def compose(self) -> ComposeResult:
        yield Static(id="event-lines")

    def show(self, events: list[Event], title: str) -> None:
        self.border_title = title
        if not events:
            body = Text("no events yet", style="dim italic")
        else:
            body = Text("\n").join(describe(e) for e in events[:SHOWN])
        self.query_one("#event-lines", Static).update(body)
