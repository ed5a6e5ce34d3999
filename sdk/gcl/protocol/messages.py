"""Wire messages between coordinator and clients: the schema both sides import, versioned.

Every payload is JSON and carries `v` (PROTOCOL_VERSION). Requests go to
`{prefix}.{operation}` by NATS request/reply; replies are a `Reply` envelope holding either a
`result` or an `error` with a stable `code`. Events go to `{prefix}.events.{kind}`.
docs/protocol.md describes the semantics; this module is the schema; `operations` pairs each
subject with its request and result.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gcl.protocol.names import validate_name

PROTOCOL_VERSION = 1
DEFAULT_PREFIX = "gcl"
MIN_LEASE_TTL = 1.0
MAX_LEASE_TTL = 86_400.0
DEFAULT_LEASE_TTL = 30.0
MAX_NAMES = 32
MAX_OCCUPY = 1_000_000
MAX_SLOTS = 1_000_000_000
# Sizes on the wire (tests/test_wire_sizes.py computes them from the limits above). The largest
# valid request is ~29 KB as the SDK writes it (32 names of 200 four-byte characters, every
# holder field full) and ~85 KB with every character \u-escaped: the coordinator refuses
# anything longer unread. NATS must carry, with room to spare, the largest reply, notice or
# event such a request causes (~63 KB) and admin views (a limit with 1,000 holders: ~360 KB):
# `gcl up` and compose.yaml give NATS this max_payload. Below NATS's default of 1 MB, so NATS
# itself refuses bigger messages and cuts off whoever sends them.
MAX_REQUEST_BYTES = 128 * 1024
MAX_PAYLOAD = 512 * 1024

LimitName = Annotated[str, AfterValidator(validate_name)]
Mode = Literal["concurrency", "rate"]
Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

ErrorCode = Literal[
    "invalid_request",
    "limit_not_found",
    "limit_exists",
    "lease_not_found",
    "lease_lost",
    "timeout",
    "unsupported_version",
    "unavailable",
    "internal",
]


class Part(BaseModel):
    """Base of every wire structure: strict about unknown fields so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(Part):
    """A request: strict types (no "2" for 2, no true for 1) and a protocol version."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: int = PROTOCOL_VERSION


class Subjects:
    """Subject names under one prefix, so two deployments can share a NATS server."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def op(self, operation: str) -> str:
        return f"{self.prefix}.{operation}"

    def event(self, kind: str) -> str:
        return f"{self.prefix}.events.{kind}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.events.>"


# --- shared pieces ---------------------------------------------------------------------------


def _printable(value: str) -> str:
    """Holder fields end up in terminals: no escape codes or control characters."""
    if not value.isprintable():
        raise ValueError("must contain only printable characters")
    return value


Printable = Annotated[str, AfterValidator(_printable)]


class Holder(Part):
    """Who holds or waits: shown to operators so they can find the process."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    worker_id: Printable = Field(default="", max_length=200)
    host: Printable = Field(default="", max_length=255)
    pid: int = Field(default=0, ge=0, le=2**31)
    label: Printable = Field(default="", max_length=200)


class LeaseInfo(Part):
    """A granted lease as the coordinator sees it."""

    lease_id: str
    request_id: str
    names: list[str]
    occupy: int
    mode: Mode
    ttl: float
    holder: Holder
    granted_at: float
    expires_in: float
    fencing_tokens: dict[str, int]


class WaiterInfo(Part):
    """One queued request, in queue order."""

    request_id: str
    names: list[str]
    occupy: int
    mode: Mode
    holder: Holder
    waited_seconds: float
    position: int


class LimitInfo(Part):
    """A limit with its live figures, all derived from live leases."""

    name: str
    limit: int
    active: bool
    slot_decay_per_second: float
    occupied: float
    held: int
    leases: int
    waiters: int
    denied: int
    avg_occupancy_seconds: float
    fencing_token: int
    is_template: bool = False
    created_at: float
    updated_at: float


# --- acquire / renew / release -------------------------------------------------------------


class AcquireRequest(Message):
    """Ask for `occupy` slots on every name in `names`, all or nothing."""

    request_id: Token
    names: list[LimitName] = Field(min_length=1, max_length=MAX_NAMES)
    occupy: int = Field(default=1, ge=1, le=MAX_OCCUPY)
    mode: Mode = "concurrency"
    lease_ttl: float = Field(
        default=DEFAULT_LEASE_TTL, ge=MIN_LEASE_TTL, le=MAX_LEASE_TTL, allow_inf_nan=False
    )
    wait: bool = True
    strict: bool = False
    holder: Holder = Holder()
    notify: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")


class AcquireResult(Part):
    """`granted` with a lease, or `queued` (a `WaitNotice` will follow on `notify`)."""

    status: Literal["granted", "queued"]
    request_id: str
    lease: LeaseInfo | None = None
    missing: list[str] = []
    positions: dict[str, int] = {}
    keepalive_seconds: float = 0.0


class WaitNotice(Part):
    """Pushed to a waiter's `notify` inbox when its request is decided."""

    request_id: str
    status: Literal["granted", "failed"]
    lease: LeaseInfo | None = None
    missing: list[str] = []
    error_code: ErrorCode | None = None
    error_message: str | None = None


class RequestRef(Message):
    """Names a queued request (keepalive, withdraw)."""

    request_id: Token


class Withdraw(Message):
    """A waiter gives up: its own timeout ran out, or its task was cancelled."""

    request_id: Token
    reason: Literal["timeout", "cancelled"] = "cancelled"


class WaitStatus(Part):
    """Answer to keepalive/withdraw: where the request stands now."""

    status: Literal["queued", "granted", "withdrawn", "released", "unknown"]
    request_id: str
    lease: LeaseInfo | None = None


class LeaseRef(Message):
    """Names a lease (renew, release, revoke)."""

    lease_id: Token


class RenewResult(Part):
    lease_id: str
    expires_in: float


class ReleaseResult(Part):
    lease_id: str
    released: bool


# --- admin ---------------------------------------------------------------------------------


class LimitCreate(Message):
    name: LimitName
    limit: int = Field(ge=0, le=MAX_SLOTS)
    active: bool = True
    slot_decay_per_second: float = Field(default=0.0, ge=0, le=1e9, allow_inf_nan=False)


class LimitUpdate(Message):
    name: LimitName
    limit: int | None = Field(default=None, ge=0, le=MAX_SLOTS)
    active: bool | None = None
    slot_decay_per_second: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)


class LimitRef(Message):
    name: LimitName


class LimitListRequest(Message):
    pattern: str | None = Field(default=None, max_length=400)


class LimitList(Part):
    limits: list[LimitInfo]


class LimitDetail(Part):
    limit: LimitInfo
    holders: list[LeaseInfo]
    waiters: list[WaiterInfo]


class LeaseListRequest(Message):
    name: LimitName | None = None


class LeaseList(Part):
    leases: list[LeaseInfo]


class Deleted(Part):
    name: str
    released_leases: int


class Revoked(Part):
    lease_id: str


class StoreHealth(Part):
    """The coordinator's database as the coordinator sees it: healthy while every change
    commits within its `store_stall_seconds`, whether commits fail or stall."""

    healthy: bool = True
    uncommitted_seconds: float = 0.0  # how long the oldest change not yet committed has waited
    problem: str | None = None  # why it is unhealthy, for people


class Pong(Part):
    coordinator_id: str
    started_at: float
    version: str
    store: StoreHealth = StoreHealth()


# --- envelope and events -------------------------------------------------------------------


class ErrorBody(Part):
    code: ErrorCode
    message: str
    field: str | None = None


class Reply(BaseModel):
    """Every reply: `ok` with a `result`, or not `ok` with an `error`."""

    v: int = PROTOCOL_VERSION
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


EventKind = Literal[
    "limit.created",
    "limit.updated",
    "limit.deleted",
    "lease.granted",
    "lease.released",
    "lease.expired",
    "lease.revoked",
    "waiter.queued",
    "waiter.timed_out",
    "waiter.withdrawn",
    "waiter.rejected",
    "coordinator.started",
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


class Event(BaseModel):
    """A change, published after it is durable. `limits` carries the new figures."""

    v: int = PROTOCOL_VERSION
    kind: EventKind
    at: float
    names: list[str] = []
    lease_id: str | None = None
    request_id: str | None = None
    holder: Holder | None = None
    occupy: int | None = None
    reason: str | None = None
    limits: list[LimitInfo] = []
