"""Lab orders in the journal, and the queue of HL7 messages that carries them to their instrument.

An order's message is queued in the same commit that records the order: once the API has said
201, the order reaches its instrument across `kill -9` and power cuts. Messages go to an
instrument one at a time, oldest first, each with the MSH-10 it was given when queued (a resend is
the same message, so an instrument can tell). A message is *queued*, *sent* (written to the
instrument, no answer yet), *acknowledged* (AA/CA) or *failed* (AE/AR/CE/CR, with the instrument's
text); after `lab.max_attempts` sends without an answer it is *dead*: kept, shown, retryable. The
order's state is its latest message's, until a result comes back for it: then *resulted*.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from vmgateway.records import LabMessage, LabOrderRecord, LabQueue, LabRefusal, OutgoingMessage
from vmgateway.store.journal import Journal, Write

WAITING = ("queued", "sent")
"""Message states the sender still has to deal with."""


Build = Callable[[str], bytes]
"""The message, given its MSH-10."""


def _queue(conn: sqlite3.Connection, order_id: str, instrument: str, control: str, build: Build, at: float) -> None:
    cursor = conn.execute(
        "INSERT INTO lab_messages (order_id, instrument, control, control_id, message, state, next_attempt_at,"
        " created_at) VALUES (?, ?, ?, '', x'', 'queued', ?, ?)", (order_id, instrument, control, at, at))
    message_id = cursor.lastrowid
    control_id = f"VMG{message_id}"
    conn.execute("UPDATE lab_messages SET control_id = ?, message = ? WHERE id = ?",
                 (control_id, build(control_id), message_id))
    conn.execute("UPDATE lab_orders SET state = 'queued', updated_at = ? WHERE order_id = ?", (at, order_id))


def place(order_id: str, instrument: str, body: str, build: Build, at: float) -> Write[bool]:
    """A new order and its NW message; False when the order id is taken."""

    def write(conn: sqlite3.Connection) -> bool:
        if conn.execute("SELECT 1 FROM lab_orders WHERE order_id = ?", (order_id,)).fetchone():
            return False
        conn.execute("INSERT INTO lab_orders (order_id, instrument, body, state, created_at, updated_at)"
                     " VALUES (?, ?, ?, 'queued', ?, ?)", (order_id, instrument, body, at, at))
        _queue(conn, order_id, instrument, "NW", build, at)
        return True

    return write


def follow_up(order_id: str, instrument: str, control: str, body: str | None, build: Build,
              at: float) -> Write[LabRefusal | None]:
    """Queue a change (XO, with the new `body`) or a cancellation (CA) of an order for `instrument`;
    None when all is well, else why not."""

    def write(conn: sqlite3.Connection) -> LabRefusal | None:
        row = conn.execute("SELECT instrument, cancelled FROM lab_orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return LabRefusal.UNKNOWN
        if row[1]:
            return LabRefusal.CANCELLED
        if row[0] != instrument:
            return LabRefusal.OTHER_INSTRUMENT
        if body is not None:
            conn.execute("UPDATE lab_orders SET body = ? WHERE order_id = ?", (body, order_id))
        if control == "CA":
            conn.execute("UPDATE lab_orders SET cancelled = 1 WHERE order_id = ?", (order_id,))
        _queue(conn, order_id, row[0], control, build, at)
        return None

    return write


def link_result(conn: sqlite3.Connection, item_id: int, order_numbers: list[str], at: float) -> str | None:
    """Within a result's own write: the first of `order_numbers` (an HL7 placer order number, ASTM
    sample ids) that is a lab order gets the result linked and becomes *resulted*; its id."""
    for order_id in order_numbers:
        if conn.execute("SELECT 1 FROM lab_orders WHERE order_id = ?", (order_id,)).fetchone():
            conn.execute("INSERT OR IGNORE INTO lab_links (item_id, order_id) VALUES (?, ?)", (item_id, order_id))
            conn.execute("UPDATE lab_orders SET state = 'resulted', updated_at = ? WHERE order_id = ?", (at, order_id))
            return order_id
    return None


def next_message(instrument: str) -> Callable[[sqlite3.Connection], OutgoingMessage | None]:
    """The oldest message the instrument has not answered."""

    def read(conn: sqlite3.Connection) -> OutgoingMessage | None:
        row = conn.execute(
            "SELECT id, order_id, control, control_id, message, attempts, next_attempt_at FROM lab_messages"
            " WHERE instrument = ? AND state IN ('queued', 'sent') ORDER BY id LIMIT 1", (instrument,)).fetchone()
        return None if row is None else OutgoingMessage(int(row[0]), row[1], row[2], row[3], bytes(row[4]),
                                                        int(row[5]), float(row[6]))

    return read


def _set_state(conn: sqlite3.Connection, message_id: int, state: str, at: float, **columns: Any) -> None:
    assignments = "".join(f", {name} = ?" for name in columns)
    conn.execute(f"UPDATE lab_messages SET state = ?{assignments} WHERE id = ?",
                 (state, *columns.values(), message_id))
    order_id = conn.execute("SELECT order_id FROM lab_messages WHERE id = ?", (message_id,)).fetchone()[0]
    latest = conn.execute("SELECT state, answer FROM lab_messages WHERE order_id = ? ORDER BY id DESC LIMIT 1",
                          (order_id,)).fetchone()
    # A result may come before the ACK of its order: resulted stays, unless the instrument refused something.
    conn.execute("UPDATE lab_orders SET state = CASE WHEN state = 'resulted' AND ? IN ('sent', 'acknowledged')"
                 " THEN state ELSE ? END, last_answer = coalesce(?, last_answer), updated_at = ? WHERE order_id = ?",
                 (latest[0], latest[0], latest[1], at, order_id))


def sending(message_id: int, at: float) -> Write[None]:
    """About to be written to the instrument: one more attempt."""

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE lab_messages SET attempts = attempts + 1 WHERE id = ?", (message_id,))
        _set_state(conn, message_id, "sent", at)

    return write


def answered(message_id: int, code: str, text: str, at: float) -> Write[None]:
    """The instrument's ACK: AA/CA acknowledged, anything else failed (with its text)."""

    def write(conn: sqlite3.Connection) -> None:
        state = "acknowledged" if code in ("AA", "CA") else "failed"
        _set_state(conn, message_id, state, at, answer=f"{code} {text}".strip(), answered_at=at)

    return write


def unanswered(message_id: int, error: str, retry_at: float, max_attempts: int, at: float) -> Write[bool]:
    """No connection or no answer: tried again at `retry_at`, or dead once out of attempts (True)."""

    def write(conn: sqlite3.Connection) -> bool:
        attempts = int(conn.execute("SELECT attempts FROM lab_messages WHERE id = ?", (message_id,)).fetchone()[0])
        dead = attempts >= max_attempts
        _set_state(conn, message_id, "dead" if dead else "sent", at, last_error=error, next_attempt_at=retry_at)
        return dead

    return write


def retry(order_id: str, at: float) -> Write[int]:
    """Dead and failed messages of the order queued again, from a first attempt; how many."""

    def write(conn: sqlite3.Connection) -> int:
        ids = [row[0] for row in conn.execute(
            "SELECT id FROM lab_messages WHERE order_id = ? AND state IN ('dead', 'failed') ORDER BY id", (order_id,))]
        for message_id in ids:
            conn.execute("UPDATE lab_messages SET attempts = 0, next_attempt_at = ? WHERE id = ?", (at, message_id))
            _set_state(conn, message_id, "queued", at)
        return len(ids)

    return write


def _order(conn: sqlite3.Connection, row: sqlite3.Row) -> LabOrderRecord:
    messages = [LabMessage(*m) for m in conn.execute(
        "SELECT control, control_id, state, attempts, last_error, answer, created_at, answered_at FROM lab_messages"
        " WHERE order_id = ? ORDER BY id", (row["order_id"],))]
    return LabOrderRecord(row["order_id"], row["instrument"], row["state"], bool(row["cancelled"]), row["last_answer"],
                          row["created_at"], row["updated_at"], row["body"], messages)


class LabOrders:
    """The store's part for lab orders (`Store.lab`)."""

    def __init__(self, journal: Journal, queued: Callable[[], None]) -> None:
        self._journal = journal
        self._queued = queued

    async def place(self, order_id: str, instrument: str, body: str, build: Build) -> bool:
        placed = await self._journal.write_async(place(order_id, instrument, body, build, time.time()))
        self._queued()
        return placed

    async def follow_up(self, order_id: str, instrument: str, control: str, body: str | None,
                        build: Build) -> LabRefusal | None:
        refused = await self._journal.write_async(follow_up(order_id, instrument, control, body, build, time.time()))
        self._queued()
        return refused

    async def retry(self, order_id: str) -> int:
        count = await self._journal.write_async(retry(order_id, time.time()))
        self._queued()
        return count

    async def next_message(self, instrument: str) -> OutgoingMessage | None:
        return await self._journal.read_async(next_message(instrument))

    async def sending(self, message_id: int) -> None:
        await self._journal.write_async(sending(message_id, time.time()))

    async def answered(self, message_id: int, code: str, text: str) -> None:
        await self._journal.write_async(answered(message_id, code, text, time.time()))

    async def unanswered(self, message_id: int, error: str, retry_at: float, max_attempts: int) -> bool:
        return await self._journal.write_async(unanswered(message_id, error, retry_at, max_attempts, time.time()))

    async def order(self, order_id: str) -> LabOrderRecord | None:
        def read(conn: sqlite3.Connection) -> LabOrderRecord | None:
            row = conn.execute("SELECT * FROM lab_orders WHERE order_id = ?", (order_id,)).fetchone()
            return None if row is None else _order(conn, row)

        return await self._journal.read_async(read)

    async def orders(self, state: str | None, limit: int = 500) -> list[LabOrderRecord]:
        """The newest orders first, of one state or all."""

        def read(conn: sqlite3.Connection) -> list[LabOrderRecord]:
            where, args = ("WHERE state = ?", (state,)) if state else ("", ())
            rows = conn.execute(f"SELECT * FROM lab_orders {where} ORDER BY created_at DESC LIMIT ?", (*args, limit))
            return [_order(conn, row) for row in rows.fetchall()]

        return await self._journal.read_async(read)

    async def summary(self) -> dict[str, LabQueue]:
        """Per instrument: messages waiting, failed, dead; the last answer."""

        def read(conn: sqlite3.Connection) -> dict[str, LabQueue]:
            counted: dict[str, dict[str, int]] = {}
            for instrument, state, count in conn.execute(
                    "SELECT instrument, state, count(*) FROM lab_messages GROUP BY instrument, state"):
                entry = counted.setdefault(instrument, {"waiting": 0, "failed": 0, "dead": 0})
                if state in WAITING:
                    entry["waiting"] += count
                elif state in ("failed", "dead"):
                    entry[state] += count
            answers = {instrument: (answer, at) for instrument, answer, at in conn.execute(
                "SELECT instrument, answer, max(answered_at) FROM lab_messages WHERE answered_at IS NOT NULL"
                " GROUP BY instrument")}
            return {instrument: LabQueue(**counts, last_answer=answers.get(instrument, (None, None))[0],
                                         last_answer_at=answers.get(instrument, (None, None))[1])
                    for instrument, counts in counted.items()}

        return await self._journal.read_async(read)
