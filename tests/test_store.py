"""The store's guard rails: clear errors for a bad database, one writer per database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gcl.coordinator.service import CoordinatorConflict
from gcl.coordinator.store import Store, StoreLocked, StoreUnavailable


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://nobody@127.0.0.1:1/db", "Connection refused"),
        ("sqlite:////proc/no-such-dir/gcl.db", "No such file"),
        ("not a url", "unparsable"),
    ],
)
def test_a_bad_database_is_one_clear_error(url: str, says: str) -> None:
    with pytest.raises(StoreUnavailable, match=says) as caught:
        Store(url).open()
    assert "GCL_DB_URL" in str(caught.value)
    assert "nobody:" not in str(caught.value)


def test_two_stores_cannot_share_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gcl.db'}"
    first = Store(url)
    first.open()
    try:
        with pytest.raises(StoreLocked, match="another coordinator"):
            Store(url).open()
    finally:
        first.close()
    again = Store(url)  # released on close
    again.open()
    again.close()


@pytest.mark.postgres
def test_two_stores_cannot_share_a_postgres_database(postgres_url: str) -> None:
    first = Store(postgres_url)
    first.open()
    try:
        with pytest.raises(StoreLocked, match="another coordinator"):
            Store(postgres_url).open()
    finally:
        first.close()


async def test_a_second_coordinator_on_the_same_prefix_refuses_to_start(
    start_coordinator: Callable[..., Any], tmp_path: Path
) -> None:
    await start_coordinator()
    with pytest.raises(CoordinatorConflict, match="already serves gcl"):
        await start_coordinator(db_url=f"sqlite:///{tmp_path / 'other.db'}")
