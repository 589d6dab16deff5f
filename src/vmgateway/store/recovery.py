"""What the store finds at start-up, after a clean stop or a crash."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

_LISTED = 20
"""Missing files named in the report; the rest are counted."""


@dataclass(frozen=True)
class StartupCheck:
    clean_stop: bool
    """The previous run recorded its stop (or there was none)."""
    partial_files: int
    """Files of transfers cut off mid-way, removed (never acknowledged)."""
    unrecorded_files: int
    """Complete files whose journal commit never happened, removed (never acknowledged)."""
    missing_files: list[tuple[int, str]]
    """(item id, spool path) of recorded items whose file is gone: acknowledged data lost."""

    @property
    def anything_found(self) -> bool:
        return bool(self.partial_files or self.unrecorded_files or self.missing_files)

    def describe(self) -> str:
        found = [
            "the previous run did not stop cleanly" if not self.clean_stop else "the previous run stopped cleanly",
            f"{self.partial_files} partial and {self.unrecorded_files} unrecorded file(s) removed"
            " (never acknowledged: their senders kept them)",
        ]
        if not self.clean_stop:
            found.append(f"{len(self.missing_files)} recorded item(s) without their file")
        if self.missing_files:
            listed = ", ".join(f"item {item_id} ({path})" for item_id, path in self.missing_files[:_LISTED])
            more = len(self.missing_files) - _LISTED
            found.append(f"missing: {listed}" + (f" and {more} more" if more > 0 else ""))
        return "; ".join(found)


def stopped_cleanly(conn: sqlite3.Connection) -> bool:
    """Whether the last run's `start` event was followed by its `stop` event."""
    last = conn.execute("SELECT kind FROM events WHERE kind IN ('start', 'stop') ORDER BY id DESC LIMIT 1").fetchone()
    return last is None or last[0] == "stop"
