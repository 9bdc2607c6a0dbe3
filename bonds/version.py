"""The installed library's version: what a checkpoint's manifest records and the API reports."""

from __future__ import annotations


def library_version() -> str:
    try:
        from importlib.metadata import version

        return version("freebind")
    except Exception:  # running from a source tree that is not installed
        return "0+source"
