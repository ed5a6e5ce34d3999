"""Every operation of the wire contract, declared once: its subject, request and result.

The coordinator routes by this table and the clients call through it, so an operation's name,
its request model and its result model cannot drift apart between the two sides.

    rpc.call(ACQUIRE, AcquireRequest(...))   # -> AcquireResult, typed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from gcl.protocol.messages import (
    AcquireRequest,
    AcquireResult,
    CoordinatorStatus,
    Deleted,
    HeldLease,
    LeaseList,
    LeaseListRequest,
    LeaseRef,
    LimitCreate,
    LimitDetail,
    LimitGetRequest,
    LimitInfo,
    LimitList,
    LimitListRequest,
    LimitRef,
    LimitUpdate,
    Message,
    Pong,
    ReleaseResult,
    RenewResult,
    RequestRef,
    Revoked,
    WaitDetail,
    WaitStatus,
    Withdraw,
)

Req = TypeVar("Req", bound=Message)
Res = TypeVar("Res", bound=BaseModel)


@dataclass(frozen=True)
class Operation(Generic[Req, Res]):
    """One request/reply operation on `{prefix}.{name}`."""

    name: str
    request: type[Req]
    result: type[Res]
    admin: bool = False  # changes or reads limits and leases as an operator does


ACQUIRE = Operation("acquire", AcquireRequest, AcquireResult)
RENEW = Operation("renew", HeldLease, RenewResult)
RELEASE = Operation("release", HeldLease, ReleaseResult)
WAIT_KEEPALIVE = Operation("wait.keepalive", RequestRef, WaitStatus)
WAIT_WITHDRAW = Operation("wait.withdraw", Withdraw, WaitStatus)
WAIT_INSPECT = Operation("wait.inspect", RequestRef, WaitDetail)  # v3: why it still waits
LIMIT_CREATE = Operation("admin.limit.create", LimitCreate, LimitInfo, admin=True)
LIMIT_GET = Operation("admin.limit.get", LimitGetRequest, LimitDetail, admin=True)
LIMIT_LIST = Operation("admin.limit.list", LimitListRequest, LimitList, admin=True)
LIMIT_UPDATE = Operation("admin.limit.update", LimitUpdate, LimitInfo, admin=True)
LIMIT_DELETE = Operation("admin.limit.delete", LimitRef, Deleted, admin=True)
LEASE_LIST = Operation("admin.lease.list", LeaseListRequest, LeaseList, admin=True)
LEASE_REVOKE = Operation("admin.lease.revoke", LeaseRef, Revoked, admin=True)
PING = Operation("admin.ping", Message, Pong, admin=True)
# Answered by every coordinator on the prefix (leader and standbys): read with `Rpc.gather`.
STATUS = Operation("admin.status", Message, CoordinatorStatus, admin=True)

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    ACQUIRE,
    RENEW,
    RELEASE,
    WAIT_KEEPALIVE,
    WAIT_WITHDRAW,
    WAIT_INSPECT,
    LIMIT_CREATE,
    LIMIT_GET,
    LIMIT_LIST,
    LIMIT_UPDATE,
    LIMIT_DELETE,
    LEASE_LIST,
    LEASE_REVOKE,
    PING,
    STATUS,
)
BY_NAME: dict[str, Operation[Any, Any]] = {op.name: op for op in OPERATIONS}
