"""Opaque cursors for paged listings: where the last page ended, readable only by this engine.

A cursor is base64url of `kind|epoch|key`: `kind` says which listing it belongs to, `key` where
the page ended (a limit name, or an arrival key of `Ranked`), and `epoch` is drawn when the
engine starts, because arrival keys restart with the process: a cursor from before a restart
is refused with a message saying to list again, rather than silently skipping or repeating.
"""

from __future__ import annotations

import base64
import binascii
import uuid

from gcl.coordinator.errors import Refusal


class Cursors:
    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex[:8]

    def make(self, kind: str, key: object) -> str:
        raw = f"{kind}|{self.epoch}|{key}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def read(self, cursor: str | None, kinds: str) -> tuple[str, str] | None:
        """(kind, key) of a cursor made by `make` for one of `kinds`; None for no cursor."""
        if cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            kind, epoch, key = raw.split("|", 2)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            kind, epoch, key = "", "", ""
        if kind not in kinds or not kind:
            raise Refusal(
                "invalid_request",
                "this cursor is not one this listing gave out: pass back next_cursor as it "
                "came, or list again from the start (no cursor)",
                "cursor",
            )
        if epoch != self.epoch:
            raise Refusal(
                "invalid_request",
                "the coordinator restarted since this listing began: list again from the start "
                "(no cursor)",
                "cursor",
            )
        return kind, key

    def read_key(self, cursor: str | None, kinds: str) -> tuple[str, int | None] | None:
        """As `read`, for arrival keys: an empty key means the start of that section."""
        found = self.read(cursor, kinds)
        if found is None:
            return None
        kind, key = found
        if not key:
            return kind, None
        try:
            return kind, int(key)
        except ValueError:
            raise Refusal(
                "invalid_request", "this cursor is damaged: list again from the start", "cursor"
            ) from None
