"""Structured logs: one JSON object a line on stdout, which journald keeps on the box.

The standard library's logging with a small formatter is enough here; a logging dependency
would buy nothing the box needs. Fields passed as `extra={...}` become keys of the object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
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
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO/DEBUG; only its warnings matter to an operator.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # uvicorn announces itself at INFO; the API logs its own start.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    # httpx logs every request at INFO; transfers log their own outcomes.
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
