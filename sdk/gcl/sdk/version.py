"""The installed version of gcl, read from the package metadata (defined once, in sdk/VERSION)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("gcl-nats-sdk")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
