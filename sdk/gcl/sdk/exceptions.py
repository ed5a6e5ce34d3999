"""The one exception tree of gcl. Catch `GCLError` to catch everything we raise.

    GCLError
    ├── CoordinatorUnavailable   no coordinator answers (NATS down, or no `gcl serve` running)
    ├── PermissionDenied         NATS refused the credential, or the operation to its role
    ├── CoordinatorUnavailable   no coordinator answers (NATS down, or no `gcl serve` running),
    │                            or it cannot confirm because its database is failing
    ├── StorageError             a database cannot be used: it does not open, or commits fail
    ├── AcquireTimeout           slots did not free up within `timeout_seconds` (a TimeoutError)
    ├── LeaseLost                the lease ended while the block ran (expired, revoked, deleted)
    └── RequestError             the coordinator refused the request; `.code` says why
        ├── InvalidRequest       bad input: a name, a number, occupy above the limit's size...
        ├── LimitNotFound        the limit does not exist (raised with strict=True, or by admin)
        ├── LimitExists          create of a name that is already taken
        ├── LeaseNotFound        admin revoke of a lease the coordinator does not know
        ├── Forbidden            another holder's lease or request (wrong secret)
        └── OverCapacity         the coordinator is at one of its caps (waiters, leases, limits)

Every message says what to do next, because the person reading it is usually an operator at
3 a.m. looking at a worker's log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gcl.sdk.waiting import Waiting


class GCLError(Exception):
    """Base of every error gcl raises."""


class CoordinatorUnavailable(GCLError):
    """Nothing answered on the coordinator's subjects: start one, or check GCL_NATS_URL."""


class PermissionDenied(GCLError):
    """NATS refused this connection's credential, or this operation to its role."""


class StorageError(GCLError):
    """The coordinator's database cannot be used: it does not open, or commits keep failing
    or stalling. `gcl` exits with code 3 for it."""


class AcquireTimeout(GCLError, TimeoutError):
    """The requested slots were not granted within the caller's `timeout_seconds`.

    A `TimeoutError`, as Prefect's `AcquireConcurrencySlotTimeoutError` is, so code written
    with `except TimeoutError:` keeps working. When the request had queued, `waiting` holds
    what the coordinator said about it last (positions, holders, an estimate), and the message
    says it too."""

    def __init__(self, message: str, *, waiting: Waiting | None = None) -> None:
        super().__init__(message)
        self.waiting = waiting

    @property
    def positions(self) -> dict[str, int]:
        """The 0-based place in each limit's queue when it gave up ({} if unknown)."""
        return self.waiting.positions if self.waiting else {}

    @property
    def holders(self) -> dict[str, list[str]]:
        """Per limit, who held its slots then (`gpu-2@node-7 pid 42 [train]`)."""
        return self.waiting.holders if self.waiting else {}


class LeaseLost(GCLError):
    """The lease ended before the block did, so another holder may now own the slots."""

    def __init__(
        self,
        message: str,
        *,
        lease_id: str | None = None,
        reason: str = "",
        actor: str | None = None,
    ) -> None:
        super().__init__(message)
        self.lease_id = lease_id
        self.reason = reason
        self.actor = actor  # the operator who revoked it, when known


class RequestError(GCLError):
    """The coordinator answered with an error code; `code` is stable, `field` names the input."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequest(RequestError):
    """The request's input is not acceptable; the message names the field and the rule."""

    code = "invalid_request"


class LimitNotFound(RequestError):
    """No limit of that name exists: create it with `gcl create NAME --limit N`."""

    code = "limit_not_found"


class LimitExists(RequestError):
    """A limit of that name already exists: update it instead of creating it."""

    code = "limit_exists"


class Forbidden(RequestError):
    """The coordinator refused: the lease or request is another holder's (wrong secret), or
    `notify` points outside the requester's own inbox."""

    code = "forbidden"


class LeaseNotFound(RequestError):
    """The coordinator does not know that lease: it was released, expired or never existed."""

    code = "lease_not_found"


class OverCapacity(RequestError):
    """The coordinator holds as much as one of its caps allows (waiters on a limit or of one
    holder, leases, limits, a template's instances): the message names the cap, its value and
    the GCL_MAX_* setting that raises it."""

    code = "over_capacity"


ERRORS_BY_CODE: dict[str, type[RequestError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        LimitNotFound,
        LimitExists,
        LeaseNotFound,
        Forbidden,
        OverCapacity,
    )
}


def error_from_code(code: str, message: str, field: str | None = None) -> GCLError:
    """Turn an error reply into the exception the caller should see."""
    if code == "timeout":
        return AcquireTimeout(message)
    if code == "lease_lost":
        return LeaseLost(message)
    if code == "unavailable":  # the coordinator answers but cannot commit: retry, as if silent
        return CoordinatorUnavailable(message)
    cls = ERRORS_BY_CODE.get(code, RequestError)
    return cls(message, field=field)
