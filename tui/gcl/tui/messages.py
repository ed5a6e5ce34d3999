"""Messages from the feed worker to the app, and from the app to its screens."""

from __future__ import annotations

from textual.message import Message

from gcl.tui.feed import Link
from gcl.tui.model import Batch


class BatchArrived(Message):
    """Coalesced changes from the feed, at most one per flush interval."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class LinkChanged(Message):
    """The connection indicator must change."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link


class BoardChanged(Message):
    """The board was updated (or a view setting changed): screens redraw what they show.

    `batch` is None when only the view changed (sort, filter, pause, sample tick).
    """

    def __init__(self, batch: Batch | None = None) -> None:
        super().__init__()
        self.batch = batch
