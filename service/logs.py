"""One log format for the service's lines and uvicorn's, and the level the operator chose.

uvicorn formats its own lines ("INFO:     Started server process") unless given a logging config; here
its loggers hand their records to the root handler instead, so every line reads the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from bonds.cli import LOG_FORMAT, quiet_loaders


def configure_logging(level: str) -> None:
    """Root logging at `level`, in the one format unless a handler exists already (`freebind` sets one up
    in that format; replacing handlers would also cut off those of a host, such as a test runner's)."""
    logging.basicConfig(format=LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if _plain_uvicorn_name not in handler.filters:
            handler.addFilter(_plain_uvicorn_name)
    quiet_loaders()


def _plain_uvicorn_name(record: logging.LogRecord) -> bool:
    """uvicorn logs "Started server process" as `uvicorn.error` (its name for the server's own log): shown
    as `uvicorn`, so an INFO line does not read as an error."""
    if record.name == "uvicorn.error":
        record.name = "uvicorn"
    return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's loggers without handlers of their own: their records reach the root handler's format."""
    loggers = {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    return {"version": 1, "disable_existing_loggers": False, "loggers": loggers}
