"""A NATS server with gcl's roles, for tests that attack it or run the stack under it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from gcl.coordinator.nats_auth import (
    Credential,
    default_credentials,
    new_credential,
    roles_config,
    write_credentials,
)
from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.sdk import ClientSettings, NatsSettings
from gcl.sdk.discovery import credential_file

PREFIX = "gcl"


class Secured:
    """A NATS server with gcl's roles, the credential files of each role, and a second worker
    user, mallory, who plays the attacker with a worker's rights."""

    def __init__(self, folder: Path, credentials: list[Credential]) -> None:
        self.folder = folder
        self.credentials = {c.role: c for c in credentials}
        self.mallory = new_credential("worker", "mallory")
        config = roles_config([*credentials, self.mallory], PREFIX)
        self.server = NatsServer(folder / "nats", config=config)
        write_credentials(folder, credentials)

    def mallory_settings(self) -> ClientSettings:
        return ClientSettings(
            nats_url=self.url,
            nats_user=self.mallory.user,
            nats_password=self.mallory.password,
            nats_inbox_prefix=self.mallory.inbox_prefix,
        )

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, role: str, cls: type[NatsSettings] = NatsSettings, **kw: Any) -> Any:
        return cls(nats_url=self.url, nats_credentials=credential_file(role, self.folder), **kw)

    async def raw(self, role: str, errors: list[str]) -> NATS:
        """A bare nats-py connection with a role's credential, recording what NATS refuses."""
        cred = self.credentials[role]

        async def on_error(error: Exception) -> None:
            errors.append(str(error).lower())

        return await nats.connect(
            self.url,
            user=cred.user,
            password=cred.password,
            inbox_prefix=cred.inbox_prefix,
            error_cb=on_error,
            allow_reconnect=False,
        )


@pytest.fixture(name="secured")
def secured_fixture(tmp_path: Path) -> Iterator[Secured]:
    world = Secured(tmp_path, default_credentials())
    world.server.start()
    try:
        yield world
    finally:
        world.server.stop()


@pytest.fixture(name="coordinator")
async def secured_coordinator_fixture(
    secured: Secured, tmp_path: Path
) -> AsyncIterator[Coordinator]:
    settings = secured.settings(
        "coordinator", CoordinatorSettings, db_url=f"sqlite:///{tmp_path / 'gcl.db'}"
    )
    coordinator = Coordinator(settings)
    await coordinator.start()
    yield coordinator
    await coordinator.stop()
