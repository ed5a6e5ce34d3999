"""Configuration from the environment (prefix GCL_), the same names for SDK, CLI and service."""

from __future__ import annotations

import ssl
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gcl.protocol import DEFAULT_LEASE_TTL, DEFAULT_PREFIX, MAX_LEASE_TTL, MIN_LEASE_TTL
from gcl.sdk.discovery import DEFAULT_NATS_URL, default_nats_url


class NatsSettings(BaseSettings):
    """How to reach NATS. Credentials are optional; TLS turns on when a CA or cert is given."""

    model_config = SettingsConfigDict(env_prefix="GCL_", extra="ignore")

    nats_url: str = Field(
        default_factory=default_nats_url,
        description="NATS server URL(s), comma-separated; default: the URL `gcl up` announced "
        f"in ./.gcl/nats.url, else {DEFAULT_NATS_URL}",
    )
    nats_user: str | None = Field(None, description="NATS user name")
    nats_password: str | None = Field(None, description="NATS password")
    nats_token: str | None = Field(None, description="NATS auth token")
    nats_creds: str | None = Field(None, description="path to a NATS .creds file")
    nats_tls_ca: str | None = Field(None, description="CA bundle to verify the NATS server")
    nats_tls_cert: str | None = Field(None, description="client certificate for mutual TLS")
    nats_tls_key: str | None = Field(None, description="client key for mutual TLS")
    prefix: str = Field(
        DEFAULT_PREFIX,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="subject prefix, to run several deployments on one NATS",
    )
    request_timeout: float = Field(5.0, gt=0, le=300, description="seconds to wait for a reply")

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"servers": self.servers}
        if self.nats_user:
            options["user"] = self.nats_user
            options["password"] = self.nats_password or ""
        if self.nats_token:
            options["token"] = self.nats_token
        if self.nats_creds:
            options["user_credentials"] = self.nats_creds
        if self.nats_tls_ca or self.nats_tls_cert:
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.nats_tls_ca)
        if self.nats_tls_cert:
            context.load_cert_chain(self.nats_tls_cert, self.nats_tls_key)
        return context


class ClientSettings(NatsSettings):
    """What workers tune: how long to keep trying a silent coordinator, default lease TTL."""

    unavailable_timeout: float = Field(
        10.0, ge=0, le=3600, description="seconds to retry a coordinator that does not answer"
    )
    lease_ttl: float = Field(DEFAULT_LEASE_TTL, ge=MIN_LEASE_TTL, le=MAX_LEASE_TTL)
