"""Create a limit, or edit one's slots and decay: checked here, before anything is sent.

The form stays open until the coordinator accepts, so its refusal (a taken name, say) is
shown next to the fields rather than lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, Switch

from gcl.protocol import LimitInfo
from gcl.sdk.exceptions import GCLError
from gcl.tui.validation import FormError, LimitSpec, parse_limit

Send = Callable[[LimitSpec], Awaitable[object]]


class LimitFormScreen(ModalScreen[bool]):
    """`existing` None: create. Otherwise edit that limit (its name cannot change)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, send: Send, existing: LimitInfo | None = None) -> None:
        super().__init__()
        self.send = send
        self.existing = existing
        self.sent: list[LimitSpec] = []

    def compose(self) -> ComposeResult:
        old = self.existing
        title = f"Edit limit {old.name}" if old else "New limit"
        with Vertical(id="dialog", classes="dialog"):
            yield Static(title, classes="dialog-title")
            yield Label("Name")
            yield Input(
                old.name if old else "",
                placeholder="e.g. gpu:gpu-1 or openai-api",
                id="name",
                disabled=old is not None,
            )
            yield Label("Slots (how many at once)")
            yield Input(str(old.limit) if old else "1", id="slots", type="integer")
            yield Label("Decay (slots freed per second after release; 0 = at once)")
            yield Input(f"{old.slot_decay_per_second:g}" if old else "0", id="decay")
            with Horizontal(classes="switch-row"):
                yield Switch(old.active if old else True, id="active", disabled=old is not None)
                yield Label("Active (grants leases)")
            yield Static("", id="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save" if old else "Create", variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#slots" if self.existing else "#name", Input).focus()

    def value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def submit(self) -> None:
        try:
            spec = parse_limit(
                self.value("name"),
                self.value("slots"),
                self.value("decay"),
                self.query_one("#active", Switch).value,
            )
        except FormError as exc:
            self.show_error(exc.message)
            self.query_one(f"#{exc.field}", Input).focus()
            return
        self.show_error("sending…")
        self.deliver(spec)

    @work(exclusive=True, group="form")
    async def deliver(self, spec: LimitSpec) -> None:
        self.sent.append(spec)
        try:
            await self.send(spec)
        except GCLError as exc:
            self.show_error(f"the coordinator refused: {exc}")
            return
        self.dismiss(True)

    def show_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(message)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)
