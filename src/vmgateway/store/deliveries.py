"""Push transfers' side of the journal: what is due, and what became of each attempt.

An item's life: `received` → `delivered`, or → `dead` after too many refusals or too long
undeliverable (kept, listed, retryable: never deleted silently). `attempts` counts refusals
(a 4xx, a STOW failure for that instance), not outages: an unreachable upstream is the
destination's problem, not the item's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from vmgateway.model import ItemKind
from vmgateway.records import DeadItem, Due, KindQueue
from vmgateway.store.access import transfers_active
from vmgateway.store.feed import item
from vmgateway.store.journal import Journal, Write
from vmgateway.store.recording import mark_delivered
from vmgateway.store.spool import Spool

_DUE = """
    SELECT i.id, i.kind, i.spool_path, i.size, i.sha256, i.received_at, i.attempts,
           d.study_instance_uid, d.sop_instance_uid, wl.order_id
    FROM items i LEFT JOIN dicom_instances d ON d.item_id = i.id LEFT JOIN worklist_links wl ON wl.item_id = i.id
"""


def _due(rows: Iterator[sqlite3.Row], busy: set[int], path_of: Callable[[str], Path]) -> Iterator[Due]:
    for row in rows:
        if row[0] not in busy:
            yield Due(row[0], row[1], path_of(row[2]) if row[2] else None, *row[3:])


def next_batch(conn: sqlite3.Connection, kind: ItemKind, now: float, busy: set[int], max_items: int,
               max_bytes: int, path_of: Callable[[str], Path], max_item_bytes: int | None = None) -> list[Due]:
    """The oldest due item of `kind` not in `busy`, and (DICOM) the due instances of its study
    after it, up to `max_items` / `max_bytes` (the first item goes alone if it is larger); none
    larger than `max_item_bytes` (large items outside their window)."""
    size_limit = 2**63 - 1 if max_item_bytes is None else max_item_bytes
    rows = conn.execute(
        f"{_DUE} WHERE i.state = 'received' AND i.kind = ? AND (i.next_try_at IS NULL OR i.next_try_at <= ?)"
        " AND i.size <= ? ORDER BY i.id", (kind, now, size_limit))
    first = next(_due(rows, busy, path_of), None)
    rows.close()
    if first is None:
        return []
    if kind != "dicom":  # a message goes alone, with its header fields
        found = item(conn, first.item_id)
        return [replace(first, hl7=found[0].hl7, astm=found[0].astm) if found else first]
    batch, size = [first], first.size
    if first.study_instance_uid is None or max_items == 1:
        return batch
    siblings = conn.execute(
        f"{_DUE} WHERE d.study_instance_uid = ? AND i.id > ? AND i.state = 'received'"
        " AND (i.next_try_at IS NULL OR i.next_try_at <= ?) AND i.size <= ? ORDER BY i.id",
        (first.study_instance_uid, first.item_id, now, size_limit))
    for due in _due(siblings, busy, path_of):
        if len(batch) >= max_items or size + due.size > max_bytes:
            break
        batch.append(due)
        size += due.size
    siblings.close()
    return batch


def record_refused(refusals: list[tuple[int, str]], at: float, max_attempts: int,
                   retry_at: dict[int, float]) -> Write[list[int]]:
    """Count a refusal per item; an item refused `max_attempts` times is dead. Returns the dead."""

    def write(conn: sqlite3.Connection) -> list[int]:
        dead = []
        for item_id, error in refusals:
            row = conn.execute(
                "UPDATE items SET attempts = attempts + 1, last_error = ?, next_try_at = ?,"
                " state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE state END"
                " WHERE id = ? AND state = 'received' RETURNING state",
                (error, retry_at.get(item_id, at), max_attempts, item_id)).fetchone()
            if row and row[0] == "dead":
                dead.append(item_id)
        return dead

    return write


def record_unreachable(item_ids: list[int], error: str, dead_before: float) -> Write[list[int]]:
    """Note why items could not be sent; those received before `dead_before` are dead."""

    def write(conn: sqlite3.Connection) -> list[int]:
        dead = []
        for item_id in item_ids:
            row = conn.execute(
                "UPDATE items SET last_error = ?,"
                " state = CASE WHEN received_at < ? THEN 'dead' ELSE state END"
                " WHERE id = ? AND state = 'received' RETURNING state",
                (error, dead_before, item_id)).fetchone()
            if row and row[0] == "dead":
                dead.append(item_id)
        return dead

    return write


def revive(item_ids: list[int] | None) -> Write[list[int]]:
    """Dead items (all of them when `item_ids` is None) go back in the queue, attempts reset."""

    def write(conn: sqlite3.Connection) -> list[int]:
        if item_ids is None:
            rows = conn.execute("UPDATE items SET state = 'received', attempts = 0, next_try_at = NULL"
                                " WHERE state = 'dead' RETURNING id").fetchall()
        else:
            rows = [row for item_id in item_ids for row in conn.execute(
                "UPDATE items SET state = 'received', attempts = 0, next_try_at = NULL"
                " WHERE id = ? AND state = 'dead' RETURNING id", (item_id,)).fetchall()]
        return sorted(int(row[0]) for row in rows)

    return write


def dead_items(conn: sqlite3.Connection, after: int, limit: int) -> list[DeadItem]:
    rows = conn.execute(
        "SELECT i.id, i.kind, i.received_at, i.sender, i.size, i.attempts, i.last_error,"
        " d.sop_instance_uid, d.study_instance_uid, h.control_id, h.sending_application"
        " FROM items i LEFT JOIN dicom_instances d ON d.item_id = i.id LEFT JOIN hl7_messages h ON h.item_id = i.id"
        " WHERE i.state = 'dead' AND i.id > ? ORDER BY i.id LIMIT ?", (after, limit)).fetchall()
    return [DeadItem(*row) for row in rows]


def queue_summary(conn: sqlite3.Connection) -> dict[str, KindQueue]:
    """Items per kind waiting to be delivered (and since when the oldest), and dead."""
    summary: dict[str, KindQueue] = {}
    for kind, state, count, oldest in conn.execute(
            "SELECT kind, state, count(*), min(received_at) FROM items WHERE state IN ('received', 'dead')"
            " GROUP BY kind, state"):
        queue = summary.get(kind, KindQueue())
        summary[kind] = (replace(queue, waiting=count, oldest_waiting_at=oldest) if state == "received"
                         else replace(queue, dead=count))
    return summary


def oldest_waiting_at(conn: sqlite3.Connection) -> float | None:
    """When the oldest item still waiting to be delivered was received."""
    oldest = conn.execute("SELECT min(received_at) FROM items WHERE state = 'received'").fetchone()[0]
    return None if oldest is None else float(oldest)


class Deliveries:
    """The push side's way into the journal: what is due, and what became of each attempt.
    Called from the event loop: reads run in a worker thread, writes are awaited, never blocked on."""

    def __init__(self, journal: Journal, spool: Spool) -> None:
        self._journal = journal
        self._spool = spool

    async def next_batch(self, kind: ItemKind, busy: set[int], max_items: int, max_bytes: int,
                         max_item_bytes: int | None = None) -> list[Due]:
        """As next_batch(); nothing while transfers are switched off."""

        def read(conn: sqlite3.Connection) -> list[Due]:
            if not transfers_active(conn):
                return []
            return next_batch(conn, kind, time.time(), busy, max_items, max_bytes, self._spool.path_of,
                              max_item_bytes)

        return await self._journal.read_async(read)

    async def mark_delivered(self, item_ids: list[int]) -> list[int]:
        """Items taken (by Vetmanager's pull, or a push that was answered): those not delivered before."""
        return await self._journal.write_async(mark_delivered(item_ids, time.time()))

    async def record_refused(self, refusals: list[tuple[int, str]], max_attempts: int,
                             retry_at: dict[int, float]) -> list[int]:
        return await self._journal.write_async(record_refused(refusals, time.time(), max_attempts, retry_at))

    async def record_unreachable(self, item_ids: list[int], error: str, dead_before: float) -> list[int]:
        return await self._journal.write_async(record_unreachable(item_ids, error, dead_before))

    async def revive(self, item_ids: list[int] | None) -> list[int]:
        return await self._journal.write_async(revive(item_ids))

    async def dead_items(self, after: int, limit: int) -> list[DeadItem]:
        return await self._journal.read_async(lambda conn: dead_items(conn, after, limit))

    async def queue_summary(self) -> dict[str, KindQueue]:
        return await self._journal.read_async(queue_summary)

    async def oldest_waiting_at(self) -> float | None:
        return await self._journal.read_async(oldest_waiting_at)
