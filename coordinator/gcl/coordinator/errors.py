"""Why the state machine refuses a request; the service turns it into an error reply."""

from __future__ import annotations

from gcl.protocol import ErrorCode


class Refusal(Exception):
    """A request the coordinator will not carry out. `code` is a protocol ErrorCode."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
