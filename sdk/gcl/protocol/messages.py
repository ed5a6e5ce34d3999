"""Wire messages between coordinator and clients: the schema both sides import, versioned.

Every payload is JSON and carries `v` (PROTOCOL_VERSION). Requests go to
`{prefix}.{operation}` by NATS request/reply; replies are a `Reply` envelope holding either a
`result` or an `error` with a stable `code`. Events go to `{prefix}.events.{kind}`.
docs/protocol.md describes the semantics; this module is the schema; `operations` pairs each
subject with its request and result.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from gcl.protocol.names import validate_name

PROTOCOL_VERSION = 3
MIN_PROTOCOL_VERSION = 2  # the oldest request version a coordinator still serves
DEFAULT_PREFIX = "gcl"
MIN_LEASE_TTL = 1.0
MAX_LEASE_TTL = 86_400.0  # a renewed lease; above it only with `long_lived: true`
MAX_LONG_LIVED_TTL = 10 * 365 * 86_400.0  # a lease nobody renews (`gcl acquire --ttl 30d`)
MAX_HOLDINGS_SHOWN = 10  # holders per limit in a `wait.inspect` answer
DEFAULT_LEASE_TTL = 30.0
MAX_NAMES = 32
MAX_OCCUPY = 1_000_000
MAX_SLOTS = 1_000_000_000
DEFAULT_PAGE = 500  # items per page of a listing, unless the request says `limit`
MAX_PAGE = 2_000
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
Cursor = Annotated[str, Field(min_length=1, max_length=1_200, pattern=r"^[A-Za-z0-9_-]+$")]
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE)]
# Chosen by the requester and known only to it and the coordinator: renew, release, keepalive
# and withdraw must present it. Never in events, lists, logs or reprs.
Secret = Annotated[
    str, Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$", repr=False)
]

ErrorCode = Literal[
    "invalid_request",
    "limit_not_found",
    "limit_exists",
    "lease_not_found",
    "lease_lost",
    "timeout",
    "over_capacity",
    "forbidden",
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
    long_lived: bool = False  # v3: not renewed, its ttl may exceed a day

    @model_serializer(mode="wrap")
    def _v2_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`long_lived` is written only when true, so v2 clients still read every other lease."""
        data: dict[str, Any] = handler(self)
        if not self.long_lived:
            data.pop("long_lived", None)
        return data


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
    """Ask for `occupy` slots on every name in `names`, all or nothing.

    `secret` proves ownership later: the lease it gets is renewed, released (and the wait kept
    alive or withdrawn) only by whoever presents it. `notify` must lie under the requester's
    own inbox prefix (the reply subject's), so nobody can aim the coordinator at another
    subject. From v3 the coordinator also pushes a `LostNotice` there if the lease ends
    without its holder asking. `long_lived` (v3) asks for a lease nobody renews, for scripts:
    only then may `lease_ttl` exceed a day.
    """

    request_id: Token
    secret: Secret
    names: list[LimitName] = Field(min_length=1, max_length=MAX_NAMES)
    occupy: int = Field(default=1, ge=1, le=MAX_OCCUPY)
    mode: Mode = "concurrency"
    long_lived: bool = False  # before lease_ttl: its check reads this
    lease_ttl: float = Field(
        default=DEFAULT_LEASE_TTL, ge=MIN_LEASE_TTL, le=MAX_LONG_LIVED_TTL, allow_inf_nan=False
    )
    wait: bool = True
    strict: bool = False
    holder: Holder = Holder()
    notify: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")

    @field_validator("lease_ttl")
    @classmethod
    def _long_ttl_is_asked_for(cls, ttl: float, info: ValidationInfo) -> float:
        if ttl > MAX_LEASE_TTL and not info.data.get("long_lived"):
            raise ValueError(
                f"a lease_ttl above {MAX_LEASE_TTL:g}s needs long_lived: true (a lease that is "
                "not renewed, such as `gcl acquire --ttl 30d`): renewed leases take at most a day"
            )
        return ttl


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


class LostNotice(Part):
    """Pushed (v3) to the `notify` inbox of a lease's acquire when the lease ends without its
    holder asking: revoked by an operator, its limit deleted, expired. Renewal stays the safety
    net (a notice can be lost); `actor` is the NATS user behind an operator's action."""

    status: Literal["lost"] = "lost"
    request_id: str
    lease_id: str
    names: list[str]
    kind: Literal["lease.expired", "lease.revoked"]
    reason: str
    actor: str | None = None
    message: str


Notice = Annotated[WaitNotice | LostNotice, Field(discriminator="status")]


class RequestRef(Message):
    """Names one's own queued request (keepalive, inspect), with the secret it was made with."""

    request_id: Token
    secret: Secret


class Withdraw(Message):
    """A waiter gives up: its own timeout ran out, or its task was cancelled."""

    request_id: Token
    secret: Secret
    reason: Literal["timeout", "cancelled"] = "cancelled"


class WaitStatus(Part):
    """Answer to keepalive/withdraw: where the request stands now."""

    status: Literal["queued", "granted", "withdrawn", "released", "unknown"]
    request_id: str
    lease: LeaseInfo | None = None


class Holding(Part):
    """A lease on a limit someone waits for, as that waiter may see it: who and for how long,
    never ids or fencing tokens."""

    holder: Holder
    occupy: int
    held_seconds: float
    long_lived: bool = False


class Standing(Part):
    """Where a waiting request stands on one of its limits, and who holds that limit now."""

    name: str
    position: int  # 0-based place in this limit's queue
    waiters: int  # the queue's length
    limit: int
    occupied: float
    active: bool
    avg_hold_seconds: float  # recent mean hold of its leases; 0 until one has ended
    leases: int  # live leases: more than `holders` lists when above MAX_HOLDINGS_SHOWN
    holders: list[Holding]  # the longest held first


class WaitDetail(Part):
    """Answer to `wait.inspect` (v3): why a request still waits, fresh from the coordinator."""

    status: Literal["queued", "granted", "unknown"]
    request_id: str
    occupy: int = 0
    waited_seconds: float = 0.0
    standings: list[Standing] = []


class LeaseRef(Message):
    """Names a lease (an operator's revoke)."""

    lease_id: Token


class HeldLease(Message):
    """Names one's own lease (renew, release), with the secret its acquire carried."""

    lease_id: Token
    secret: Secret


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


# Listings come in pages: `limit` items at most (fewer when they would not fit in one NATS
# message), and `next_cursor` to pass back as `cursor` for the next page; None at the end.


class LimitListRequest(Message):
    pattern: str | None = Field(default=None, max_length=400)
    limit: PageSize = DEFAULT_PAGE
    cursor: Cursor | None = None


class LimitList(Part):
    limits: list[LimitInfo]
    next_cursor: str | None = None


class LimitGetRequest(Message):
    """One limit's figures, then its holders (oldest first) and its queue, paged together."""

    name: LimitName
    limit: PageSize = DEFAULT_PAGE
    cursor: Cursor | None = None


class LimitDetail(Part):
    limit: LimitInfo
    holders: list[LeaseInfo]
    waiters: list[WaiterInfo]
    next_cursor: str | None = None


class LeaseListRequest(Message):
    name: LimitName | None = None
    limit: PageSize = DEFAULT_PAGE
    cursor: Cursor | None = None


class LeaseList(Part):
    leases: list[LeaseInfo]
    next_cursor: str | None = None


class Deleted(Part):
    name: str
    released_leases: int


class Revoked(Part):
    lease_id: str


class CoordinatorStatus(Part):
    """One coordinator's answer to `admin.status`: every running one answers, leader or not."""

    coordinator_id: str
    role: Literal["leader", "standby"]
    epoch: int | None = None  # the leader's epoch; None for a standby
    since: float  # when it took the lead, or when it started waiting
    host: str = ""
    pid: int = 0
    version: str = ""


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
    "coordinator.elected",
    "coordinator.stepped_down",
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
    actor: str | None = None  # who asked for an admin change: the NATS user it came from
    long_lived: bool | None = None  # v3: true on events of a lease that is not renewed
    limits: list[LimitInfo] = []
