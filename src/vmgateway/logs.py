"""Structured logs: one JSON object a line on stdout, which journald keeps on the box.

The standard library's logging with a small formatter is enough here; a logging dependency
would buy nothing the box needs. Fields passed as `extra={...}` become keys of the object.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
"""syslog priorities (journald's PRIORITY) of Python's levels."""


def stdout_is_journal() -> bool:
    """Whether stdout is a stream to journald: systemd says so in JOURNAL_STREAM (device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        status = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


class JsonFormatter(logging.Formatter):
    """One JSON object a line; to journald, each line starts with its priority (`<4>` for a
    warning), which systemd strips and keeps as the entry's PRIORITY: `journalctl -p warning`
    then lists the warnings. Elsewhere (a terminal, a test reading stdout) the lines stay plain JSON."""

    def __init__(self, priority_prefix: bool = False) -> None:
        super().__init__()
        self.priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        line = self._json(record)
        if self.priority_prefix:
            return f"<{_PRIORITIES.get(record.levelno, 6)}>{line}"
        return line

    def _json(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(priority_prefix=stdout_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO/DEBUG; only its warnings matter to an operator.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # uvicorn announces itself at INFO; the API logs its own start.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    # httpx logs every request at INFO; transfers log their own outcomes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # asyncio logs a failed accept() each time it retries (once 254,130 lines in two minutes).
    logging.getLogger("asyncio").addFilter(FloodFilter())


class Repeats:
    """Counts repeats of a line so that it is said once per interval, with how many went unsaid:
    one peer refused a thousand times a second must not fill the box's journal."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}

    def due(self, key: str) -> int | None:
        """How many repeats of `key` went unsaid when it is due to be said again, else None."""
        now = time.monotonic()
        with self._lock:
            said_at, unsaid = self._seen.get(key, (now - self.every_s, 0))
            if now - said_at < self.every_s:
                self._seen[key] = (said_at, unsaid + 1)
                return None
            self._seen[key] = (now, 0)
            return unsaid


class FloodFilter(logging.Filter):
    """Lets each distinct message of a logger through once per interval."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self._repeats = Repeats(every_s)

    def filter(self, record: logging.LogRecord) -> bool:
        unsaid = self._repeats.due(str(record.msg))
        if unsaid is None:
            return False
        if unsaid:
            record.repeats_unsaid = unsaid
        return True


class SayingSparingly:
    """A logger's warnings, each distinct message at most once per interval (`repeats_unsaid`
    counts the ones left out)."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self.logger = logger
        self._repeats = Repeats(every_s)

    def warning(self, message: str, per: str = "", **extra: Any) -> None:
        """Said unless said within the interval — per message, or per message and `per` (e.g. an address)."""
        unsaid = self._repeats.due(f"{message}\0{per}")
        if unsaid is not None:
            self.logger.warning(message, extra=extra | {"repeats_unsaid": unsaid})


class LastProblems(logging.Handler):
    """Remembers the last warning or error of each part of the gateway, for the status API.

    Parts are named by their logger: `vmgateway.dicom.receiver` belongs to `dicom`.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: dict[str, dict[str, object]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        parts = record.name.split(".")
        if len(parts) > 1 and parts[0] == "vmgateway":
            detail = getattr(record, "error", None) or getattr(record, "reason", None)
            message = record.getMessage() + (f": {detail}" if detail else "")
            self.last[parts[1]] = {"at": record.created, "level": record.levelname.lower(), "message": message}
