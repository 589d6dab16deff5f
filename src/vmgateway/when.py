"""Moments and durations as people read them: local time to the second with its zone (the box's
time zone is the clinic's; Vetmanager's staff read it from elsewhere), durations in the largest
two units."""

from __future__ import annotations

from datetime import datetime


def when(timestamp: float | None, missing: str = "–") -> str:
    """`timestamp` (seconds since the epoch) as `YYYY-MM-DD HH:MM:SS ZONE` in local time; `missing`
    for none."""
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if timestamp else missing


def duration(seconds: float) -> str:
    """`seconds` as a person says it: 45 s, 12 min, 3 h 20 min, 2 d 5 h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{days} d" + (f" {hours % 24} h" if hours % 24 else "")
