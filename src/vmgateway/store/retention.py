"""Removing delivered files: after `keep_delivered_days`, or sooner when the disk runs low.

A file may be shared: identical bytes received twice land on the same content name. It goes
only when every item naming it is delivered, and never while a receiver is placing the same
bytes again (the spool's doom/claim handshake, see Spool.doom).
"""

from __future__ import annotations

import sqlite3

from vmgateway.store.journal import Write
from vmgateway.store.spool import Spool


def removable_files(conn: sqlite3.Connection, delivered_before: float | None, limit: int) -> list[str]:
    """Spool paths whose items are all delivered (before `delivered_before`, if given), oldest first."""
    rows = conn.execute(
        "SELECT spool_path FROM items WHERE state = 'delivered' AND spool_path IS NOT NULL"
        " AND delivered_at < ? GROUP BY spool_path"
        " HAVING NOT EXISTS (SELECT 1 FROM items u WHERE u.spool_path = items.spool_path AND u.state != 'delivered')"
        " ORDER BY min(delivered_at) LIMIT ?",
        (delivered_before if delivered_before is not None else float("inf"), limit)).fetchall()
    return [row[0] for row in rows]


def forget_files(spool: Spool, paths: list[str], at: float) -> Write[list[str]]:
    """In the journal's writer (so no receiver commits in between): for each path still only
    named by delivered items and not being placed again, clear it from the items and doom
    it. Returns the doomed paths: the caller removes them once this is committed."""

    def write(conn: sqlite3.Connection) -> list[str]:
        doomed = []
        for path in paths:
            wanted = conn.execute("SELECT 1 FROM items WHERE spool_path = ? AND state != 'delivered' LIMIT 1",
                                  (path,)).fetchone()
            if wanted or not spool.doom(path):
                continue
            conn.execute("UPDATE items SET spool_path = NULL, removed_at = ? WHERE spool_path = ?", (at, path))
            doomed.append(path)
        return doomed

    return write
