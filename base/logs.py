"""Structured logging: every line, ours and uvicorn's, is one JSON object on stderr."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from typing import Any

import orjson

ACCESS_LOGGER = "modelport.access"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON line per record; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, access_log: bool) -> None:
    """Route the root, uvicorn and access loggers through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware writes the access line (with request id and model); uvicorn's is off.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger(ACCESS_LOGGER).disabled = not access_log


class AccessLog:
    """The per-request line, written without the logging machinery.

    Same JSON shape as every other line (`ts`, `level`, `logger`, `msg` + fields), but
    built with one orjson call and the second-resolution part of the timestamp cached:
    a LogRecord and formatter per request cost as much as a small model's predict. Lines
    written on an event loop are gathered for up to `FLUSH_AFTER` seconds and written
    together: one write to stderr per burst instead of one system call per request. They
    are flushed at exit too; a process killed outright loses at most that window.
    """

    FLUSH_AFTER = 0.05

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._second = -1
        self._prefix = ""
        self.pending: list[bytes] = []
        atexit.register(self.flush)

    @property
    def enabled(self) -> bool:
        return not self.logger.disabled and self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = {
            "ts": f"{self._prefix}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": ACCESS_LOGGER,
            "msg": "request",
            **fields,
        }
        self.pending.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no event loop here: write at once
                self.flush()

    def flush(self) -> None:
        if self.pending:
            lines = b"".join(self.pending)
            self.pending.clear()
            sys.stderr.write(lines.decode())
            sys.stderr.flush()


def uvicorn_log_config() -> dict[str, Any]:
    """Keep uvicorn from installing its own handlers over ours."""
    return {"version": 1, "disable_existing_loggers": False}
