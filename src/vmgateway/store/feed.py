"""What was received, as Vetmanager and people see it: the pull feed, one item and its bytes,
complete studies, events, senders and the counts behind status and metrics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from vmgateway.model import is_own_test
from vmgateway.records import (
    AstmFields,
    DicomFields,
    Event,
    Hl7Fields,
    Item,
    ItemCounts,
    KindTotals,
    LabLink,
    SenderSeen,
    Study,
    StudyInstance,
)
from vmgateway.store.journal import Journal, JournalError, connect
from vmgateway.store.spool import Spool

_CHUNK = 1 << 20

_ITEM_COLUMNS = """
    i.id, i.kind, i.state, i.received_at, i.sender, i.peer_address, i.size, i.sha256, i.delivered_at,
    i.spool_path,
    d.sop_instance_uid, d.version, d.sop_class_uid, d.transfer_syntax_uid, d.study_instance_uid,
    d.series_instance_uid, d.patient_id AS dicom_patient_id, d.patient_name AS dicom_patient_name,
    d.accession_number, d.modality, d.study_date, d.species, d.breed, d.responsible_person,
    h.sending_application, h.sending_facility, h.message_type, h.control_id, h.processing_id,
    h.version AS hl7_version,
    h.charset, h.charset_used, h.patient_id AS hl7_patient_id, h.patient_name AS hl7_patient_name,
    h.placer_order_number, h.filler_order_number, h.observation_count, wl.order_id,
    a.listener, a.instrument, a.sample_ids, a.patient_ids AS astm_patient_ids, a.test_codes, a.result_count,
    ll.order_id AS lab_order_id
"""
_FROM = """
    FROM items i
    LEFT JOIN dicom_instances d ON d.item_id = i.id
    LEFT JOIN hl7_messages h ON h.item_id = i.id
    LEFT JOIN worklist_links wl ON wl.item_id = i.id
    LEFT JOIN astm_messages a ON a.item_id = i.id
    LEFT JOIN lab_links ll ON ll.item_id = i.id
"""
_DICOM = ("sop_instance_uid", "version", "sop_class_uid", "transfer_syntax_uid", "study_instance_uid",
          "series_instance_uid", "accession_number", "modality", "study_date", "species", "breed",
          "responsible_person", "order_id")
_HL7 = ("sending_application", "sending_facility", "message_type", "control_id", "processing_id", "charset",
        "charset_used", "placer_order_number", "filler_order_number", "observation_count")


_ASTM = ("listener", "instrument", "sample_ids", "test_codes", "result_count")


def _fields(row: sqlite3.Row, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: row[name] for name in names}


def _item(row: sqlite3.Row) -> Item:
    kind = row["kind"]
    dicom = hl7 = astm = None
    if kind == "dicom":
        dicom = DicomFields(**_fields(row, _DICOM), patient_id=row["dicom_patient_id"],
                            patient_name=row["dicom_patient_name"])
    elif kind == "astm":
        astm = AstmFields(**_fields(row, _ASTM), patient_ids=row["astm_patient_ids"])
    elif kind == "hl7":
        hl7 = Hl7Fields(**_fields(row, _HL7), version=row["hl7_version"], patient_id=row["hl7_patient_id"],
                        patient_name=row["hl7_patient_name"])
    return Item(row["id"], kind, row["state"], row["received_at"], row["sender"], row["peer_address"], row["size"],
                row["sha256"], row["delivered_at"], dicom, hl7, astm,
                LabLink(row["lab_order_id"]) if row["lab_order_id"] else None)


def items_after(conn: sqlite3.Connection, cursor: int, limit: int, undelivered_only: bool) -> list[Item]:
    condition = "AND i.state != 'delivered'" if undelivered_only else ""
    rows = conn.execute(
        f"SELECT {_ITEM_COLUMNS} {_FROM} WHERE i.id > ? {condition} ORDER BY i.id LIMIT ?", (cursor, limit)
    ).fetchall()
    return [_item(row) for row in rows]


def newest_items(conn: sqlite3.Connection, limit: int) -> list[Item]:
    """The last `limit` items received, newest first (the status page's list)."""
    rows = conn.execute(f"SELECT {_ITEM_COLUMNS} {_FROM} ORDER BY i.id DESC LIMIT ?", (limit,)).fetchall()
    return [_item(row) for row in rows]


def item(conn: sqlite3.Connection, item_id: int) -> tuple[Item, str | None] | None:
    """The item, and its spool path relative to the spool (None when its bytes are in the journal)."""
    row = conn.execute(f"SELECT {_ITEM_COLUMNS} {_FROM} WHERE i.id = ?", (item_id,)).fetchone()
    return (_item(row), row["spool_path"]) if row else None


def payload(conn: sqlite3.Connection, item_id: int) -> bytes:
    """An item's bytes kept in the journal (HL7, ASTM: at most their max_message_bytes)."""
    row = conn.execute("SELECT data FROM payloads WHERE item_id = ?", (item_id,)).fetchone()
    if row is None:
        raise KeyError(f"item {item_id} has no payload in the journal")
    return bytes(row[0])


def counts(conn: sqlite3.Connection) -> ItemCounts:
    """Items and bytes in all, by kind and by state, what is not delivered yet, and the newest
    item's time: the one count query behind status, metrics and `vmgateway status`."""
    by_kind = {kind: KindTotals(n, size) for kind, n, size in conn.execute(
        "SELECT kind, count(*), coalesce(sum(size), 0) FROM items GROUP BY kind")}
    by_state = {state: n for state, n in conn.execute("SELECT state, count(*) FROM items GROUP BY state")}
    last = conn.execute("SELECT max(received_at) FROM items").fetchone()[0]
    return ItemCounts(items=sum(k.items for k in by_kind.values()), bytes=sum(k.bytes for k in by_kind.values()),
                      by_kind=by_kind, by_state=by_state,
                      undelivered=sum(n for state, n in by_state.items() if state != "delivered"),
                      last_received_at=last)


STUDY_COLUMNS = ("study_instance_uid, patient_id, patient_name, accession_number, study_date, modalities,"
                 " instance_count, first_received_at, last_received_at, completed_at")
"""A study's columns in the order of `Study`'s fields."""


def complete_studies(conn: sqlite3.Connection, quiet_since: float, cursor: str, limit: int) -> list[Study]:
    """Complete studies (by Study Instance UID order after `cursor`) with their instances' item IDs."""
    studies = conn.execute(
        f"SELECT {STUDY_COLUMNS} FROM studies WHERE (completed_at IS NOT NULL OR last_received_at < ?)"
        " AND study_instance_uid > ? ORDER BY study_instance_uid LIMIT ?",
        (quiet_since, cursor, limit),
    ).fetchall()
    result = []
    for study in studies:
        instances = conn.execute(
            "SELECT item_id, sop_instance_uid, version, series_instance_uid FROM dicom_instances"
            " WHERE study_instance_uid = ? ORDER BY item_id",
            (study["study_instance_uid"],),
        ).fetchall()
        result.append(Study(**dict(study), instances=[StudyInstance(*instance) for instance in instances]))
    return result


def events(conn: sqlite3.Connection, before: int | None, after: int | None, kind: str | None,
           limit: int) -> list[Event]:
    """Newest first below `before`; or, with `after`, oldest first from that cursor on (a reader
    that follows the events as they come); of one kind when `kind` is given."""
    arguments: list[int | str]
    where, arguments = ("id > ?", [after]) if after is not None else (
        "id < ?", [before if before is not None else 2**63 - 1])
    if kind is not None:
        where += " AND kind = ?"
        arguments.append(kind)
    order = "ASC" if after is not None else "DESC"
    rows = conn.execute(f"SELECT id, at, kind, detail FROM events WHERE {where} ORDER BY id {order} LIMIT ?",
                        (*arguments, limit)).fetchall()
    return [Event(*row) for row in rows]


def senders(conn: sqlite3.Connection) -> list[SenderSeen]:
    """Every sender seen, newest first; `gateway_test` marks the gateway's own checks."""
    rows = conn.execute(
        "SELECT protocol, name, address, first_seen_at, last_seen_at, items FROM senders ORDER BY last_seen_at DESC"
    ).fetchall()
    return [SenderSeen(**dict(row), gateway_test=is_own_test(row["protocol"], row["name"])) for row in rows]


class Feed:
    """The store's reads for the API and the push sinks; every one runs off the event loop."""

    def __init__(self, journal: Journal, spool: Spool) -> None:
        self._journal = journal
        self._spool = spool

    async def items_after(self, cursor: int, limit: int, undelivered_only: bool) -> list[Item]:
        return await self._journal.read_async(lambda conn: items_after(conn, cursor, limit, undelivered_only))

    async def newest_items(self, limit: int) -> list[Item]:
        return await self._journal.read_async(lambda conn: newest_items(conn, limit))

    async def item(self, item_id: int) -> tuple[Item, Path | None] | None:
        """The item, and its spool file (None when its bytes are in the journal, or the file
        was removed after delivery)."""
        found = await self._journal.read_async(lambda conn: item(conn, item_id))
        if found is None:
            return None
        record, relative = found
        return record, self._spool.path_of(relative) if relative else None

    async def payload(self, item_id: int) -> bytes:
        return await self._journal.read_async(lambda conn: payload(conn, item_id))

    async def payload_chunks(self, item_id: int) -> AsyncIterator[bytes]:
        """An item's bytes from the journal in pieces, each read off the loop: never the whole
        message at once. One connection serves all pieces, from whichever worker thread."""
        try:
            conn = await asyncio.to_thread(connect, self._journal.path, read_only=True, any_thread=True)
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc
        try:
            blob = await asyncio.to_thread(conn.blobopen, "payloads", "data", item_id, readonly=True)
            with blob:
                while chunk := await asyncio.to_thread(blob.read, _CHUNK):
                    yield chunk
        finally:
            conn.close()

    async def complete_studies(self, quiet_since: float, cursor: str, limit: int) -> list[Study]:
        return await self._journal.read_async(lambda conn: complete_studies(conn, quiet_since, cursor, limit))

    async def events(self, before: int | None, after: int | None, kind: str | None, limit: int) -> list[Event]:
        return await self._journal.read_async(lambda conn: events(conn, before, after, kind, limit))

    async def senders(self) -> list[SenderSeen]:
        return await self._journal.read_async(senders)

    async def counts(self) -> ItemCounts:
        return await self._journal.read_async(counts)
