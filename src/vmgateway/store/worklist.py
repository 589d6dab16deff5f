"""Worklist entries in the journal, and the link from a received instance to its order."""

from __future__ import annotations

import sqlite3
import time

from vmgateway.records import WorklistRecord
from vmgateway.store.journal import Journal, Write


class StepExists(Exception):
    """A procedure step with that SOP Instance UID was created before (N-CREATE twice)."""


def put_entry(order_id: str, accession_number: str, study_instance_uid: str, scheduled_at: str, entry: str,
              at: float, expires_at: float, create: bool) -> Write[bool]:
    """Create (`create`) or replace an entry; False when it exists already (create) or not (update)."""

    def write(conn: sqlite3.Connection) -> bool:
        exists = conn.execute("SELECT 1 FROM worklist WHERE order_id = ?", (order_id,)).fetchone() is not None
        if exists == create:
            return False
        if create:
            conn.execute(
                "INSERT INTO worklist (order_id, accession_number, study_instance_uid, scheduled_at, entry,"
                " created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, accession_number, study_instance_uid, scheduled_at, entry, at, at, expires_at))
        else:
            conn.execute(
                "UPDATE worklist SET accession_number = ?, study_instance_uid = ?, scheduled_at = ?, entry = ?,"
                " updated_at = ?, expires_at = ?, state = CASE WHEN state = 'cancelled' THEN 'scheduled'"
                " ELSE state END WHERE order_id = ?",
                (accession_number, study_instance_uid, scheduled_at, entry, at, expires_at, order_id))
        return True

    return write


def cancel_entry(order_id: str, at: float) -> Write[bool]:
    """The entry leaves the worklist (it is kept, cancelled, until it expires); False if unknown."""

    def write(conn: sqlite3.Connection) -> bool:
        changed = conn.execute("UPDATE worklist SET state = 'cancelled', updated_at = ? WHERE order_id = ?",
                               (at, order_id)).rowcount
        return bool(changed)

    return write


def _row(row: sqlite3.Row) -> WorklistRecord:
    return WorklistRecord(row["order_id"], row["state"], row["created_at"], row["updated_at"], row["performed_at"],
                          row["expires_at"], row["linked_items"], row["mpps"], row["entry"])


_SELECT = ("SELECT w.*, (SELECT count(*) FROM worklist_links l WHERE l.order_id = w.order_id) AS linked_items,"
           " (SELECT status FROM mpps m WHERE m.order_id = w.order_id ORDER BY updated_at DESC LIMIT 1) AS mpps"
           " FROM worklist w")


def entries(conn: sqlite3.Connection, now: float, state: str | None = None) -> list[WorklistRecord]:
    """Entries not yet expired, by scheduled time (all states, or one)."""
    condition, arguments = ("AND state = ?", (now, state)) if state else ("", (now,))
    rows = conn.execute(f"{_SELECT} WHERE expires_at > ? {condition} ORDER BY scheduled_at, order_id", arguments)
    return [_row(row) for row in rows]


def entry(conn: sqlite3.Connection, order_id: str) -> WorklistRecord | None:
    row = conn.execute(f"{_SELECT} WHERE order_id = ?", (order_id,)).fetchone()
    return _row(row) if row else None


def scheduled_entries(conn: sqlite3.Connection, now: float) -> list[str]:
    """What the worklist offers modalities: the entries (JSON) neither cancelled, performed nor expired."""
    return [row[0] for row in conn.execute(
        "SELECT entry FROM worklist WHERE state = 'scheduled' AND expires_at > ? ORDER BY scheduled_at, order_id",
        (now,))]


def _order_for(conn: sqlite3.Connection, accession_number: str | None, study_instance_uid: str | None) -> str | None:
    """The entry an instance or a procedure step belongs to: by Accession Number, else Study Instance UID."""
    if not (accession_number or study_instance_uid):
        return None
    row = conn.execute(
        "SELECT order_id FROM worklist WHERE (accession_number = ? AND accession_number != '')"
        " OR (study_instance_uid = ? AND study_instance_uid != '') ORDER BY created_at DESC LIMIT 1",
        (accession_number or "", study_instance_uid or "")).fetchone()
    return None if row is None else str(row[0])


def link_to_order(conn: sqlite3.Connection, item_id: int, accession_number: str | None,
                  study_instance_uid: str | None, at: float) -> str | None:
    """Inside the instance's own write: link it to the entry with its Accession Number (or Study
    Instance UID) and mark that entry performed. The order's ID, or None."""
    order_id = _order_for(conn, accession_number, study_instance_uid)
    if order_id is None:
        return None
    conn.execute("INSERT OR IGNORE INTO worklist_links (item_id, order_id) VALUES (?, ?)", (item_id, order_id))
    conn.execute("UPDATE worklist SET state = 'performed', performed_at = ? WHERE order_id = ? AND state = 'scheduled'",
                 (at, order_id))
    return order_id


def forget_expired(now: float) -> Write[int]:
    """Delete entries past their expiry that nothing was linked to (linked ones stay: the feed
    names their order). How many went."""

    def write(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "DELETE FROM worklist WHERE expires_at <= ? AND order_id NOT IN (SELECT order_id FROM worklist_links)",
            (now,)).rowcount

    return write


MPPS_STATES = {"IN PROGRESS": "in_progress", "COMPLETED": "performed", "DISCONTINUED": "scheduled"}
"""What a procedure step's status makes of its entry: being done (off the worklist), done, or to
do again (a discontinued step leaves the examination undone)."""


def create_step(sop_instance_uid: str, accession_number: str | None, study_instance_uid: str | None,
                attributes: str, calling_ae: str, at: float) -> Write[str | None]:
    """An N-CREATE: the step IN PROGRESS, its entry with it. The order ID (or None); raises
    StepExists for a SOP Instance UID already known."""

    def write(conn: sqlite3.Connection) -> str | None:
        order_id = _order_for(conn, accession_number, study_instance_uid)
        if conn.execute("SELECT 1 FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone():
            raise StepExists(f"procedure step {sop_instance_uid} exists already")
        conn.execute("INSERT INTO mpps (sop_instance_uid, order_id, status, attributes, calling_ae, created_at,"
                     " updated_at) VALUES (?, ?, 'IN PROGRESS', ?, ?, ?, ?)",
                     (sop_instance_uid, order_id, attributes, calling_ae, at, at))
        if order_id is not None:
            conn.execute("UPDATE worklist SET state = 'in_progress', updated_at = ? WHERE order_id = ?"
                         " AND state = 'scheduled'", (at, order_id))
        return order_id

    return write


def set_step(sop_instance_uid: str, status: str | None, attributes: str, at: float) -> Write[str]:
    """An N-SET: new attributes, perhaps a final status. Returns the step's status before
    ('' when the step is unknown); a step no longer IN PROGRESS is not changed."""

    def write(conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT status, order_id FROM mpps WHERE sop_instance_uid = ?",
                           (sop_instance_uid,)).fetchone()
        if row is None or row[0] != "IN PROGRESS":
            return "" if row is None else str(row[0])
        new_status = status or "IN PROGRESS"
        conn.execute("UPDATE mpps SET status = ?, attributes = ?, updated_at = ? WHERE sop_instance_uid = ?",
                     (new_status, attributes, at, sop_instance_uid))
        if row[1] is not None and new_status != "IN PROGRESS":
            performed = ", performed_at = ?" if new_status == "COMPLETED" else ""
            conn.execute(f"UPDATE worklist SET state = ?, updated_at = ?{performed} WHERE order_id = ?"
                         " AND state IN ('in_progress', 'scheduled')",
                         (MPPS_STATES[new_status], at, *([at] if performed else []), row[1]))
        return str(row[0])

    return write


def step_attributes(conn: sqlite3.Connection, sop_instance_uid: str) -> str | None:
    row = conn.execute("SELECT attributes FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
    return None if row is None else str(row[0])


class Worklist:
    """Worklist entries and procedure steps. The API's calls are async (event loop); the DICOM
    side's are not: pynetdicom calls its handlers in the association's own thread."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def put_entry(self, order_id: str, accession_number: str, study_instance_uid: str, scheduled_at: str,
                        entry: str, expires_at: float, create: bool) -> bool:
        return await self._journal.write_async(put_entry(
            order_id, accession_number, study_instance_uid, scheduled_at, entry, time.time(), expires_at, create))

    async def cancel_entry(self, order_id: str) -> bool:
        return await self._journal.write_async(cancel_entry(order_id, time.time()))

    async def entries(self, state: str | None = None) -> list[WorklistRecord]:
        now = time.time()
        return await self._journal.read_async(lambda conn: entries(conn, now, state))

    async def entry(self, order_id: str) -> WorklistRecord | None:
        return await self._journal.read_async(lambda conn: entry(conn, order_id))

    async def forget_expired(self) -> int:
        return await self._journal.write_async(forget_expired(time.time()))

    def scheduled(self) -> list[str]:
        """The entries (JSON) the worklist offers modalities now."""
        now = time.time()
        return self._journal.read(lambda conn: scheduled_entries(conn, now))

    def create_step(self, sop_instance_uid: str, accession_number: str | None, study_instance_uid: str | None,
                    attributes: str, calling_ae: str, timeout: float) -> str | None:
        return self._journal.write(create_step(sop_instance_uid, accession_number, study_instance_uid, attributes,
                                               calling_ae, time.time()), timeout)

    def set_step(self, sop_instance_uid: str, status: str | None, attributes: str, timeout: float) -> str:
        return self._journal.write(set_step(sop_instance_uid, status, attributes, time.time()), timeout)

    def step_attributes(self, sop_instance_uid: str) -> str | None:
        return self._journal.read(lambda conn: step_attributes(conn, sop_instance_uid))
