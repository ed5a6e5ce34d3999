"""The connection indicator and mode flags (paused, read-only) at the top of every screen."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from gcl.tui.feed import Link, Status

ICONS = {
    Status.CONNECTING: ("◌", "connecting"),
    Status.CONNECTED: ("●", "connected"),
    Status.RECONNECTING: ("◌", "reconnecting"),
    Status.NO_COORDINATOR: ("✖", "coordinator not answering"),
}
CLASSES = {
    Status.CONNECTING: "-waiting",
    Status.CONNECTED: "-connected",
    Status.RECONNECTING: "-waiting",
    Status.NO_COORDINATOR: "-down",
}


class StatusBar(Static):
    """One line: status word first (what an operator looks for), then why, then the modes."""

    def show(self, link: Link, *, paused: bool, buffered: int, read_only: bool) -> None:
        icon, word = ICONS[link.status]
        text = Text.assemble((f" {icon} {word} ", "bold"), ("· " + link.detail, ""))
        if paused:
            text.append(f"   ⏸ PAUSED ({buffered} updates held; p resumes)", "bold yellow")
        if read_only:
            text.append("   READ-ONLY", "bold magenta")
        for cls in set(CLASSES.values()):
            self.set_class(cls == CLASSES[link.status], cls)
        self.update(text)
