"""The coordinator's configuration: flags override these, which come from GCL_* variables."""

from __future__ import annotations

from pydantic import Field

from sdk.settings import NatsSettings

DEFAULT_DB_URL = "sqlite:///.gcl/gcl.db"


class CoordinatorSettings(NatsSettings):
    db_url: str = Field(
        DEFAULT_DB_URL,
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    sqlite_synchronous: str = Field(
        "NORMAL",
        pattern="(?i)^(NORMAL|FULL)$",
        description="NORMAL survives kill -9; FULL a power cut",
    )
    keepalive_seconds: float = Field(
        2.0, gt=0, le=60, description="how often waiters prove they are alive"
    )
    db_retry_seconds: float = Field(
        30.0, gt=0, le=3600, description="how long to retry a failing commit, then exit"
    )
