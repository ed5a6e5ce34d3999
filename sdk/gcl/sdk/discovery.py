"""Where a worker or a `gcl` command finds NATS when it is not told.

`gcl up` announces the URL of the NATS it started in `<data dir>/nats.url` (data dir:
GCL_DATA_DIR, default `./.gcl`), so every process started in that folder (the CLI, the
dashboard, the examples, a worker script) finds it with no flag. The order, everywhere:
an explicit setting or flag, then GCL_NATS_URL, then the announced URL, then the default.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATA_DIR = ".gcl"
URL_FILE = "nats.url"


def data_dir() -> Path:
    """The folder `gcl up` keeps its state in: GCL_DATA_DIR, else `./.gcl`."""
    return Path(os.environ.get("GCL_DATA_DIR", DEFAULT_DATA_DIR))


def discovered_url(folder: Path | None = None) -> str | None:
    """The NATS URL a running `gcl up` in this folder announced, if any."""
    path = (folder or data_dir()) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url or None


def default_nats_url() -> str:
    """The URL to use when neither a setting nor GCL_NATS_URL names one."""
    return discovered_url() or DEFAULT_NATS_URL


def resolve_nats_url(flag: str | None) -> str:
    """A flag, else GCL_NATS_URL, else what `gcl up` announced, else the default."""
    return flag or os.environ.get("GCL_NATS_URL") or default_nats_url()


AUTH_DIR = "auth"
ROLES = ("coordinator", "operator", "observer", "worker")


def credential_file(role: str, folder: Path | None = None) -> Path:
    """Where `gcl up` (or `gcl auth init --out`) keeps the credential of one role."""
    return (folder or data_dir()) / AUTH_DIR / f"{role}.env"


def read_credential(path: Path) -> dict[str, str]:
    """The GCL_NATS_* settings in a credential file (`KEY=value` lines, `#` comments)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("GCL_NATS_"):
            values[key.removeprefix("GCL_").lower()] = value.strip()
    return values


def discovered_credential(role: str) -> dict[str, str]:
    """The credential `gcl up` made for `role` in this folder, if there is one."""
    try:
        return read_credential(credential_file(role))
    except OSError:
        return {}
