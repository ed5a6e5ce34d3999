"""Where the CLI finds NATS: --nats flag, then GCL_NATS_URL, then the URL `gcl up` wrote."""

from __future__ import annotations

import os
from pathlib import Path

from sdk.settings import DEFAULT_NATS_URL

DEFAULT_DATA_DIR = ".gcl"
URL_FILE = "nats.url"


def data_dir() -> Path:
    return Path(os.environ.get("GCL_DATA_DIR", DEFAULT_DATA_DIR))


def discovered_url(folder: Path | None = None) -> str | None:
    """The NATS URL a running `gcl up` in this folder announced, if any."""
    path = (folder or data_dir()) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url or None


def resolve_nats_url(flag: str | None) -> str:
    return flag or os.environ.get("GCL_NATS_URL") or discovered_url() or DEFAULT_NATS_URL


def announce_url(folder: Path, url: str) -> Path:
    path = folder / URL_FILE
    path.write_text(url + "\n")
    return path
