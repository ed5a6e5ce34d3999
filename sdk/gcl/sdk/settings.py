"""Configuration from the environment (prefix GCL_), the same names for SDK, CLI and service."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gcl.protocol import DEFAULT_LEASE_TTL, DEFAULT_PREFIX, MAX_LEASE_TTL, MIN_LEASE_TTL
from gcl.sdk.discovery import (
    DEFAULT_NATS_URL,
    default_nats_url,
    discovered_credential,
    read_credential,
)

Role = Literal["coordinator", "operator", "observer", "worker"]
_CREDENTIAL_FIELDS = ("nats_user", "nats_token", "nats_creds", "nats_nkey_seed")


class NatsSettings(BaseSettings):
    """How to reach NATS, and as whom. TLS turns on when a CA or a client certificate is given.

    Credentials come, first found wins, from: arguments; GCL_NATS_* variables; the file named
    by GCL_NATS_CREDENTIALS (a `gcl auth init` credential); the credential of `nats_role` that a
    `gcl up` in this folder wrote (`.gcl/auth/<role>.env`). Secrets are `SecretStr`: they never
    show in a repr, a log line or an error message.
    """

    model_config = SettingsConfigDict(env_prefix="GCL_", extra="ignore")

    nats_url: str = Field(
        default_factory=default_nats_url,
        description="NATS server URL(s), comma-separated; default: the URL `gcl up` announced "
        f"in ./.gcl/nats.url, else {DEFAULT_NATS_URL}",
    )
    nats_role: Role = Field("worker", description="which credential `gcl up` made to pick")
    nats_credentials: Path | None = Field(None, description="a credential file to read")
    nats_user: str | None = Field(None, description="NATS user name")
    nats_password: SecretStr | None = Field(None, description="NATS password")
    nats_token: SecretStr | None = Field(None, description="NATS auth token")
    nats_creds: str | None = Field(None, description="path to a NATS .creds file (JWT + nkey)")
    nats_nkey_seed: SecretStr | None = Field(None, description="an nkey seed (SU...)")
    nats_inbox_prefix: str = Field(
        "_INBOX",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="where replies come back; with roles, the user's own (_GCL_INBOX.<user>)",
    )
    nats_identity: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the NATS user admin requests are sent as (default: nats_user)",
    )
    nats_tls_ca: str | None = Field(None, description="CA bundle to verify the NATS server")
    nats_tls_cert: str | None = Field(None, description="client certificate for mutual TLS")
    nats_tls_key: str | None = Field(None, description="client key for mutual TLS")
    prefix: str = Field(
        DEFAULT_PREFIX,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="subject prefix, to run several deployments on one NATS",
    )
    request_timeout: float = Field(5.0, gt=0, le=300, description="seconds to wait for a reply")

    @model_validator(mode="after")
    def _fill_credential(self) -> Self:
        """No credential given: take the role's from GCL_NATS_CREDENTIALS or from `gcl up`."""
        if any(getattr(self, name) for name in _CREDENTIAL_FIELDS):
            return self
        if self.nats_credentials is not None:
            try:
                found = read_credential(self.nats_credentials)
            except OSError as exc:
                raise ValueError(f"cannot read the credential file: {exc}") from None
        else:
            found = discovered_credential(self.nats_role)
        for name, value in found.items():
            if name in type(self).model_fields and name not in self.model_fields_set:
                field = type(self).model_fields[name]
                secret = field.annotation == SecretStr | None
                object.__setattr__(self, name, SecretStr(value) if secret else value)
        return self

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def identity(self) -> str | None:
        """The NATS user this connection authenticates as, when it has a name."""
        return self.nats_identity or self.nats_user

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"servers": self.servers, "inbox_prefix": self.nats_inbox_prefix}
        if self.nats_user:
            options["user"] = self.nats_user
            options["password"] = _reveal(self.nats_password)
        if self.nats_token:
            options["token"] = _reveal(self.nats_token)
        if self.nats_creds:
            options["user_credentials"] = self.nats_creds
        if self.nats_nkey_seed:
            _need_nkeys()
            options["nkeys_seed_str"] = _reveal(self.nats_nkey_seed)
        if self.nats_tls_ca or self.nats_tls_cert:
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.nats_tls_ca)
        if self.nats_tls_cert:
            context.load_cert_chain(self.nats_tls_cert, self.nats_tls_key)
        return context


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _need_nkeys() -> None:
    try:
        import nkeys  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise ValueError(
            "GCL_NATS_NKEY_SEED needs the nkeys package: pip install 'gcl-nats-sdk[nkeys]'"
        ) from None


class ClientSettings(NatsSettings):
    """What workers tune: how long to keep trying a silent coordinator, default lease TTL, and
    when a waiting request says why it is blocked."""

    attempt_timeout: float = Field(
        0.3,
        gt=0,
        le=300,
        description="seconds one try of an acquire or release waits for its reply before trying "
        "again (idempotent): short, so a failover costs little",
    )
    unavailable_timeout: float = Field(
        10.0, ge=0, le=3600, description="seconds to retry a coordinator that does not answer"
    )
    lease_ttl: float = Field(DEFAULT_LEASE_TTL, ge=MIN_LEASE_TTL, le=MAX_LEASE_TTL)
    wait_report_after: float = Field(
        1.0, gt=0, le=3600, description="seconds of waiting before saying why (log, on_wait)"
    )
    wait_report_every: float = Field(
        10.0, gt=0, le=3600, description="seconds between later reports while it still waits"
    )
