"""Where `gcl up` announces its NATS; the lookup itself is the SDK's (`gcl.sdk.discovery`)."""

from __future__ import annotations

from pathlib import Path

from gcl.sdk.discovery import (
    DEFAULT_DATA_DIR,
    URL_FILE,
    data_dir,
    discovered_url,
    resolve_nats_url,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "URL_FILE",
    "announce_url",
    "data_dir",
    "discovered_url",
    "resolve_nats_url",
]


def announce_url(folder: Path, url: str) -> Path:
    """Write the URL for every process started in this folder to find."""
    path = folder / URL_FILE
    path.write_text(url + "\n")
    return path
