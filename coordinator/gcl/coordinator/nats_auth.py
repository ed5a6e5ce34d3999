"""Roles enforced by the NATS server itself: who may publish and subscribe to what.

gcl does not authenticate anybody: NATS does. This module writes the part of a nats-server
configuration that declares one user per role with least-privilege subject permissions, and
one credential file per user for the clients (`GCL_NATS_*` lines that `NatsSettings` reads).

| role        | may publish                                     | may subscribe           |
|-------------|-------------------------------------------------|-------------------------|
| worker      | acquire, renew, release, wait.*                 | its own inbox           |
| operator    | a worker's, every admin op (as itself), events' | its own inbox, events   |
|             | JetStream consumer API                          |                         |
| observer    | read-only admin ops (as itself), the consumer   | its own inbox, events   |
|             | API                                             |                         |
| coordinator | its prefix, replies and notices to inboxes, the | its prefix, its inbox   |
|             | JetStream API                                   |                         |

Each user has its own inbox prefix (`_GCL_INBOX.<user>`), so nobody reads another's replies or
wait notices, and admin requests go to `{prefix}.admin.{op}.{user}`, which NATS lets only that
user publish: the coordinator learns who asked from the subject, not from the client's word.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcl.protocol import OPERATIONS
from gcl.sdk.discovery import ROLES, credential_file, read_credential
from gcl.sdk.events import stream_name

INBOX_ROOT = "_GCL_INBOX"
READ_ONLY_ADMIN = (
    "admin.limit.get",
    "admin.limit.list",
    "admin.lease.list",
    "admin.ping",
    "admin.status",
)
USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Credential:
    """One NATS user: its role, name and password, and where its replies come back."""

    role: str
    user: str
    password: str

    @property
    def inbox_prefix(self) -> str:
        return f"{INBOX_ROOT}.{self.user}"

    def env_lines(self) -> str:
        return (
            f"# gcl credential for the {self.role} role: keep it secret (owner-only file)\n"
            f"GCL_NATS_USER={self.user}\n"
            f"GCL_NATS_PASSWORD={self.password}\n"
            f"GCL_NATS_INBOX_PREFIX={self.inbox_prefix}\n"
        )


def new_credential(role: str, user: str | None = None) -> Credential:
    """A fresh user for `role` with a random 192-bit password."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    name = user or f"gcl-{role}"
    if not USER_NAME.match(name):
        raise ValueError(f"user name {name!r}: 1-64 letters, digits, '-' or '_'")
    return Credential(role, name, secrets.token_urlsafe(24))


def permissions(role: str, user: str, prefix: str) -> dict[str, Any]:
    """The publish and subscribe allow-lists of one user (everything else is denied)."""
    inbox = f"{INBOX_ROOT}.{user}.>"
    stream = stream_name(prefix)
    worker_ops = [f"{prefix}.{op.name}" for op in OPERATIONS if not op.admin]
    consumer_api = [
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{stream}",
        "$JS.API.STREAM.NAMES",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]
    events = f"{prefix}.events.>"
    if role == "worker":
        return _allow(worker_ops, [inbox])
    if role == "operator":
        admin = [f"{prefix}.{op.name}.{user}" for op in OPERATIONS if op.admin]
        return _allow(worker_ops + admin + consumer_api, [inbox, events])
    if role == "observer":
        admin = [f"{prefix}.{name}.{user}" for name in READ_ONLY_ADMIN]
        return _allow(admin + consumer_api, [inbox, events])
    if role == "coordinator":
        return _allow([f"{prefix}.>", f"{INBOX_ROOT}.>", "$JS.API.>"], [f"{prefix}.>", inbox])
    raise ValueError(f"unknown role {role!r}")


def _allow(publish: list[str], subscribe: list[str]) -> dict[str, Any]:
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def authorization(credentials: list[Credential], prefix: str) -> dict[str, Any]:
    """The `authorization` block of a nats-server configuration."""
    users = [
        {
            "user": c.user,
            "password": c.password,
            "permissions": permissions(c.role, c.user, prefix),
        }
        for c in credentials
    ]
    return {"users": users, "timeout": 2}


def roles_config(
    credentials: list[Credential],
    prefix: str,
    *,
    store_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """nats-server configuration lines (its format reads a JSON value after each key) that
    declare gcl's roles; the address, port and max_payload come from elsewhere."""
    config: dict[str, Any] = {}
    if store_dir is not None:
        config["jetstream"] = {"store_dir": str(store_dir)}
    config["authorization"] = authorization(credentials, prefix)
    config.update(extra or {})
    header = "# gcl's roles: users and least-privilege permissions (written by gcl)\n"
    lines = (f"{key}: {json.dumps(value, indent=2)}\n" for key, value in config.items())
    return header + "".join(lines)


def write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read (created that way: never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)
    return path


def write_credentials(folder: Path, credentials: list[Credential]) -> list[Path]:
    """One `<role>.env` file per credential in `folder/auth/`, owner-only."""
    return [write_private(credential_file(c.role, folder), c.env_lines()) for c in credentials]


def default_credentials() -> list[Credential]:
    """One user per role: what `gcl up` and `gcl auth init` start from."""
    return [new_credential(role) for role in ROLES]


def load_credentials(folder: Path) -> list[Credential] | None:
    """The credentials written in `folder/auth/` before, if every role has one."""
    found = []
    for role in ROLES:
        try:
            values = read_credential(credential_file(role, folder))
        except OSError:
            return None
        user, password = values.get("nats_user"), values.get("nats_password")
        if not user or not password:
            return None
        found.append(Credential(role, user, password))
    return found


def local_credentials(folder: Path) -> list[Credential]:
    """`gcl up`'s: kept across restarts (other shells hold them), made on first use."""
    credentials = load_credentials(folder)
    if credentials is None:
        credentials = default_credentials()
        write_credentials(folder, credentials)
    return credentials
