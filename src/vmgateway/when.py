"""A moment as people read it: local time, to the second (the box's time zone is the clinic's)."""

from __future__ import annotations

from datetime import datetime


def when(timestamp: float | None, missing: str = "–") -> str:
    """`timestamp` (seconds since the epoch) as `YYYY-MM-DD HH:MM:SS`; `missing` for none."""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else missing
