"""Whether the previous run stopped cleanly (what the start-up check, `records.StartupCheck`, reports)."""

from __future__ import annotations

import sqlite3


def stopped_cleanly(conn: sqlite3.Connection) -> bool:
    """Whether the last run's `start` event was followed by its `stop` event."""
    last = conn.execute("SELECT kind FROM events WHERE kind IN ('start', 'stop') ORDER BY id DESC LIMIT 1").fetchone()
    return last is None or last[0] == "stop"
