"""The coordinator's configuration: flags override these, which come from GCL_* variables."""

from __future__ import annotations

from pydantic import Field

from gcl.coordinator.bounds import Bounds
from gcl.protocol import MAX_PAYLOAD, MAX_REQUEST_BYTES
from gcl.sdk.settings import NatsSettings, Role

DEFAULT_DB_URL = "sqlite:///.gcl/gcl.db"
DEFAULT_BOUNDS = Bounds()


class CoordinatorSettings(NatsSettings):
    nats_role: Role = Field("coordinator", description="which credential `gcl up` made to pick")
    db_url: str = Field(
        DEFAULT_DB_URL,
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    sqlite_synchronous: str = Field(
        "FULL",
        pattern="(?i)^(NORMAL|FULL)$",
        description="FULL (default) survives a power cut; NORMAL only kill -9, for less fsync",
    )
    keepalive_seconds: float = Field(
        2.0, gt=0, le=60, description="how often waiters prove they are alive"
    )
    db_retry_seconds: float = Field(
        30.0, gt=0, le=3600, description="how long to retry a failing commit, then exit"
    )
    store_stall_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="the store is unhealthy once a change has waited this long to commit",
    )
    backlog_messages: int = Field(
        10_000,
        ge=100,
        le=10_000_000,
        description="per worker subject (acquire, renew, ...): requests waiting to be read "
        "before new ones are dropped and counted; each admin subject gets a tenth",
    )
    backlog_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024 * 1024,
        le=1024 * 1024 * 1024,
        description="per worker subject: bytes waiting before new requests are dropped; "
        "each admin subject gets a quarter",
    )
    events_max_age_seconds: float = Field(
        7 * 86_400.0, gt=0, le=10 * 365 * 86_400, description="keep stored events this long"
    )
    events_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="keep at most this many bytes of stored events"
    )
    metrics_port: int = Field(
        0, ge=0, le=65_535, description="serve Prometheus metrics on this port; 0 turns them off"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address for the metrics port (0.0.0.0 to let others scrape)"
    )
    max_request_bytes: int = Field(
        MAX_REQUEST_BYTES,
        ge=1024,
        le=MAX_PAYLOAD,
        description="refuse a request payload larger than this before parsing it (the largest "
        "valid one, an acquire of 32 long names with every character escaped, is ~85 KB)",
    )
    max_limits: int = Field(
        DEFAULT_BOUNDS.max_limits,
        ge=1,
        description="limits and templates in all, instances included",
    )
    max_instances_per_template: int = Field(
        DEFAULT_BOUNDS.max_instances_per_template,
        ge=1,
        description="limits one template may create (one per worker name)",
    )
    max_leases_per_limit: int = Field(
        DEFAULT_BOUNDS.max_leases_per_limit,
        ge=1,
        description="live leases on one limit, inactive (dry-run) limits included",
    )
    max_leases: int = Field(DEFAULT_BOUNDS.max_leases, ge=1, description="live leases in all")
    max_waiters_per_limit: int = Field(
        DEFAULT_BOUNDS.max_waiters_per_limit, ge=1, description="waiters queued on one limit"
    )
    max_waiters_per_holder: int = Field(
        DEFAULT_BOUNDS.max_waiters_per_holder,
        ge=1,
        description="waiters queued by one holder (its worker_id, host and pid)",
    )
    max_waiters: int = Field(DEFAULT_BOUNDS.max_waiters, ge=1, description="waiters queued in all")

    def bounds(self) -> Bounds:
        """The caps, as the engine takes them."""
        return Bounds(**{name: getattr(self, name) for name in Bounds.__dataclass_fields__})
