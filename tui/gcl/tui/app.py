"""The dashboard app: owns the board, the feed worker, and every operator action.

Actions live here (not on screens) so keys, the command palette and both screens reach the
same code, and `--read-only` can switch them all off in one place (`check_action`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from gcl.protocol import Deleted, LimitInfo
from gcl.sdk import format as fmt
from gcl.sdk.exceptions import GCLError
from gcl.tui.feed import Feed, Link, Status, Timing
from gcl.tui.messages import BatchArrived, BoardChanged, LinkChanged
from gcl.tui.model import SORTS, Batch, Board
from gcl.tui.screens.confirm import ConfirmScreen
from gcl.tui.screens.detail import DetailScreen
from gcl.tui.screens.help import HelpScreen
from gcl.tui.screens.limit_form import LimitFormScreen
from gcl.tui.screens.main import KIND_FILTERS, MainScreen
from gcl.tui.source import DataSource
from gcl.tui.validation import LimitSpec
from gcl.tui.widgets.status_bar import StatusBar

MUTATIONS = frozenset(
    {"create_limit", "edit_limit", "adjust_slots", "toggle_active", "delete_limit", "revoke_lease"}
)


@dataclass(frozen=True)
class Options:
    """Knobs tests and snapshots turn: fixed clock, no sampling, faster health checks."""

    read_only: bool = False
    timing: Timing = field(default_factory=Timing)
    sample_seconds: float = 5.0
    detail_refresh_seconds: float = 0.5
    clock: Callable[[], float] = time.time


class DashboardApp(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "gcl dashboard"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(
        self, source: DataSource, options: Options | None = None, board: Board | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.options = options or Options()
        self.board = board or Board()
        self.link = Link(Status.CONNECTING, f"connecting to {source.label}")
        self.paused = False
        self.held = Batch()
        self.batches_applied = 0
        self.errors: list[str] = []
        self._slot_targets: dict[str, int] = {}
        self.feed = Feed(source, self._post_batch, self._post_link, self.options.timing)

    @property
    def read_only(self) -> bool:
        return self.options.read_only

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    def on_mount(self) -> None:
        self.run_worker(self.feed.run(), name="feed", group="feed", exclusive=True)
        if self.options.sample_seconds > 0:
            self.set_interval(self.options.sample_seconds, self.sample)

    # --- data in ----------------------------------------------------------------------------

    def _post_batch(self, batch: Batch) -> None:
        self.post_message(BatchArrived(batch))

    def _post_link(self, link: Link) -> None:
        self.post_message(LinkChanged(link))

    def on_batch_arrived(self, message: BatchArrived) -> None:
        if self.paused:
            self.held.merge(message.batch)
            self.broadcast(None)
        else:
            self.apply(message.batch)

    def apply(self, batch: Batch) -> None:
        self.board.apply(batch)
        self.batches_applied += 1
        self.broadcast(batch)

    def on_link_changed(self, message: LinkChanged) -> None:
        self.link = message.link
        self.broadcast(None)

    def sample(self) -> None:
        self.board.sample()
        self.broadcast(None)

    def broadcast(self, batch: Batch | None) -> None:
        for screen in self.screen_stack:
            screen.post_message(BoardChanged(batch))

    def show_status(self, bar: StatusBar) -> None:
        bar.show(self.link, paused=self.paused, buffered=self.held.size, read_only=self.read_only)

    # --- navigation -------------------------------------------------------------------------

    def open_detail(self, name: str) -> None:
        if name in self.board.limits:
            self.push_screen(DetailScreen(name))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            held, self.held = self.held, Batch()
            self.apply(held)
        else:
            self.broadcast(None)

    def action_resync(self) -> None:
        self.feed.request_resync()

    def selected_limit(self) -> LimitInfo | None:
        picker = getattr(self.screen, "selected_limit", None)
        name = picker() if callable(picker) else None
        return self.board.limits.get(name) if name else None

    # --- actions that change the coordinator ------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.read_only and action in MUTATIONS)

    def allowed(self) -> bool:
        if self.read_only:
            self.report_error("read-only dashboard: restart without --read-only to change limits")
        return not self.read_only

    def action_create_limit(self) -> None:
        if self.allowed():
            self.push_screen(LimitFormScreen(self.send_create))

    async def send_create(self, spec: LimitSpec) -> None:
        info = await self.source.create_limit(spec)
        self.changed(info, f"created {info.name}")

    def action_edit_limit(self) -> None:
        info = self.selected_limit()
        if self.allowed() and self.need(info):
            self.push_screen(LimitFormScreen(self.send_edit, existing=info))

    async def send_edit(self, spec: LimitSpec) -> None:
        info = await self.source.update_limit(
            spec.name, limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second
        )
        decay = fmt.rate(info.slot_decay_per_second)
        self.changed(info, f"{info.name}: {info.limit} slots, decay {decay}")

    def action_adjust_slots(self, delta: int) -> None:
        info = self.selected_limit()
        if self.allowed() and self.need(info):
            assert info is not None
            slots = max(0, self._slot_targets.get(info.name, info.limit) + delta)
            self._slot_targets[info.name] = slots
            self.mutate(f"{info.name} to {slots} slots", lambda: self._set_slots(info.name, slots))

    async def _set_slots(self, name: str, slots: int) -> LimitInfo:
        """Presses faster than round trips add up: each counts from the last one's target."""
        try:
            return await self.source.update_limit(name, limit=slots)
        finally:
            if self._slot_targets.get(name) == slots:
                del self._slot_targets[name]

    def action_toggle_active(self) -> None:
        info = self.selected_limit()
        if self.allowed() and self.need(info):
            assert info is not None
            verb = "disable" if info.active else "enable"
            self.mutate(
                f"{verb} {info.name}",
                lambda: self.source.update_limit(info.name, active=not info.active),
            )

    def action_delete_limit(self) -> None:
        info = self.selected_limit()
        if not (self.allowed() and self.need(info)):
            return
        assert info is not None
        held = (
            f"{info.held} of its {info.limit} slots are held by {info.leases} lease(s); "
            "their holders lose them (LeaseLost at block exit)."
            if info.leases
            else "No slots are held right now."
        )
        waiting = f" {info.waiters} waiting request(s) will fail." if info.waiters else ""

        def answer(yes: bool | None) -> None:
            if yes:
                self.mutate(f"delete {info.name}", lambda: self._delete(info.name))

        self.push_screen(
            ConfirmScreen(f"Delete limit {info.name}?", held + waiting, "Delete"), answer
        )

    async def _delete(self, name: str) -> Deleted:
        """Drop the row at once and leave its detail screen: there is nothing left to show."""
        deleted = await self.source.delete_limit(name)
        self.apply(Batch(deleted={name}))
        if isinstance(self.screen, DetailScreen) and self.screen.limit_name == name:
            self.pop_screen()
        return deleted

    def action_revoke_lease(self) -> None:
        screen = self.screen
        if not self.allowed() or not isinstance(screen, DetailScreen):
            return
        lease = screen.selected_lease()
        if lease is None:
            self.report_error("no holder selected: choose a lease in the Holders table first")
            return
        who = fmt.holder(lease.holder)

        def answer(yes: bool | None) -> None:
            if yes:
                self.mutate(
                    f"revoke {lease.lease_id}", lambda: self.source.revoke_lease(lease.lease_id)
                )
                screen.mark_dirty()

        message = (
            f"Lease {lease.lease_id} of {who} holds {lease.occupy} slot(s) on "
            f"{', '.join(lease.names)}. Its holder gets LeaseLost and must stop using them."
        )
        self.push_screen(ConfirmScreen("Revoke this lease?", message, "Revoke"), answer)

    def need(self, info: LimitInfo | None) -> bool:
        if info is None:
            self.report_error("no limit selected: choose one in the table first")
        return info is not None

    def mutate(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        self.run_worker(self.send(what, call), group="mutations")

    async def send(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        """Run one change; the coordinator's refusal is shown, never swallowed."""
        try:
            result = await call()
        except GCLError as exc:
            self.report_error(f"could not {what}: {exc}")
            return
        if isinstance(result, LimitInfo):
            self.changed(result, what)
        else:
            self.notify(f"done: {what}", timeout=3)
            self.feed.request_resync()

    def changed(self, info: LimitInfo, what: str) -> None:
        """Show our own change at once, even before its event arrives (or while paused)."""
        self.board.apply(Batch(limits={info.name: info}))
        self.broadcast(Batch(limits={info.name: info}))
        self.notify(f"done: {what}", timeout=3)

    def report_error(self, message: str) -> None:
        self.errors.append(message)
        self.notify(message, title="error", severity="error", timeout=10)

    # --- command palette --------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from self.palette_commands(screen)

    def palette_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        if not self.read_only:
            yield SystemCommand("New limit", "Create a limit (n)", self.action_create_limit)
            yield SystemCommand("Edit limit", "Slots and decay (e)", self.action_edit_limit)
            yield SystemCommand(
                "Add a slot", "One slot more (+)", lambda: self.action_adjust_slots(1)
            )
            yield SystemCommand(
                "Remove a slot", "One slot fewer (-)", lambda: self.action_adjust_slots(-1)
            )
            yield SystemCommand("Enable / disable limit", "(a)", self.action_toggle_active)
            yield SystemCommand("Delete limit", "Asks first (d)", self.action_delete_limit)
            if isinstance(screen, DetailScreen):
                yield SystemCommand(
                    "Revoke lease", "The chosen holder's lease (r)", self.action_revoke_lease
                )
        yield SystemCommand("Pause / resume live updates", "(p)", self.action_toggle_pause)
        yield SystemCommand("Resync now", "Reload every limit", self.action_resync)
        yield SystemCommand("Keys and help", "(?)", self.action_help)
        if isinstance(screen, MainScreen):
            yield from main_screen_commands(screen)


def main_screen_commands(screen: MainScreen) -> Iterable[SystemCommand]:
    yield SystemCommand("Filter limits by name", "(/)", screen.action_focus_filter)
    for sort in SORTS:
        yield SystemCommand(f"Sort by {sort}", "(s cycles)", _bind(screen.set_sort, sort))
    for kind in KIND_FILTERS:
        label = "all kinds" if kind is None else (kind if "." in kind else f"{kind}.*")
        family = kind is None or "." not in kind  # single kinds show when searched for
        yield SystemCommand(
            f"Events: {label}", "(k cycles)", _bind(screen.set_kind, kind), discover=family
        )
    yield SystemCommand(
        "Open detail of the chosen limit",
        "(enter)",
        lambda: screen.dashboard.open_detail(screen.selected_limit() or ""),
    )


def _bind(function: Callable[[Any], None], value: object) -> Callable[[], None]:
    return lambda: function(value)
