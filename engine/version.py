"""nanotui's version, as the installed distribution states it (pyproject.toml's
`version`), for `nanotui --version` and each run's provenance."""

from __future__ import annotations

from importlib import metadata


def nanotui_version() -> str:
    try:
        return metadata.version("nanotui")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
