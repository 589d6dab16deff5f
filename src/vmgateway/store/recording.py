"""The journal writes that record what receivers hand to the store.

The receivers describe what they received in vmgateway.model's plain dataclasses; they never see SQL.
The write functions run inside the journal's writer thread (see journal.py), which is what
makes the duplicate check and the version number race-free across associations.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, fields

from vmgateway.model import AstmSummary, DicomInstance, Hl7Details, Hl7Message, ItemKind, Kept, Receipt, Sender
from vmgateway.store.journal import Write
from vmgateway.store.lab import link_result
from vmgateway.store.spool import SpooledFile
from vmgateway.store.worklist import link_to_order

_BLOB_CHUNK = 1 << 20
_INSTANCE_COLUMNS = tuple(f.name for f in fields(DicomInstance))
_INSERT_INSTANCE = (f"INSERT INTO dicom_instances ({', '.join(_INSTANCE_COLUMNS)}, item_id, version)"
                    f" VALUES ({', '.join('?' * (len(_INSTANCE_COLUMNS) + 2))})")
"""Built once: `dataclasses.asdict` deep-copies every field, 70 µs of each instance's write."""


def record_dicom_instance(
    instance: DicomInstance, spooled: SpooledFile, sender: Sender, received_at: float
) -> Write[Receipt]:
    def write(conn: sqlite3.Connection) -> Receipt:
        _touch_sender(conn, sender, received_at)
        versions = conn.execute(
            "SELECT d.item_id, d.version, i.sha256 FROM dicom_instances d JOIN items i ON i.id = d.item_id"
            " WHERE d.sop_instance_uid = ? ORDER BY d.version",
            (instance.sop_instance_uid,),
        ).fetchall()
        for item_id, version, sha256 in versions:
            if sha256 == spooled.sha256:
                return Receipt(item_id, Kept.DUPLICATE, version)
        version = versions[-1][1] + 1 if versions else 1
        item_id = _insert_item(conn, "dicom", spooled, sender, received_at)
        conn.execute(_INSERT_INSTANCE, (*(getattr(instance, name) for name in _INSTANCE_COLUMNS), item_id, version))
        if instance.study_instance_uid:
            _touch_study(conn, instance, received_at, new_instance=not versions)
        link_to_order(conn, item_id, instance.accession_number, instance.study_instance_uid, received_at)
        return Receipt(item_id, Kept.NEW_VERSION if versions else Kept.STORED, version)

    return write


def record_hl7_message(
    message: Hl7Message, raw: bytes | bytearray, sha256: str, sender: Sender, received_at: float
) -> Write[Receipt]:
    """Keep the raw bytes and the MSH fields in one transaction; a resent message (same
    MSH-3, MSH-4, MSH-10 and bytes; or same bytes when MSH-10 is empty) is not kept twice."""

    def write(conn: sqlite3.Connection) -> Receipt:
        _touch_sender(conn, sender, received_at)
        if message.control_id:
            earlier = conn.execute(
                "SELECT h.item_id FROM hl7_messages h JOIN items i ON i.id = h.item_id"
                " WHERE h.sending_application = ? AND h.sending_facility = ? AND h.control_id = ? AND i.sha256 = ?",
                (message.sending_application, message.sending_facility, message.control_id, sha256),
            ).fetchone()
        else:
            earlier = conn.execute(
                "SELECT id FROM items WHERE kind = 'hl7' AND sha256 = ?", (sha256,)
            ).fetchone()
        if earlier:
            return Receipt(int(earlier[0]), Kept.DUPLICATE, 1)
        item_id = _insert_message_item(conn, "hl7", raw, sha256, sender, received_at)
        # Only Hl7Message's own fields: a receiver may hand over a subclass that knows more.
        columns = {f.name: getattr(message, f.name) for f in fields(Hl7Message)} | {"item_id": item_id}
        conn.execute(
            f"INSERT INTO hl7_messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            tuple(columns.values()),
        )
        return Receipt(item_id, Kept.STORED, 1)

    return write


def record_astm_message(raw: bytes, summary: AstmSummary, sha256: str, sender: Sender,
                        received_at: float) -> Write[Receipt]:
    """Keep an ASTM message's raw bytes and what was read from it; the same bytes again (a final
    frame resent after its ACK was lost on a new connection) are not kept twice."""

    def write(conn: sqlite3.Connection) -> Receipt:
        _touch_sender(conn, sender, received_at)
        earlier = conn.execute("SELECT id FROM items WHERE kind = 'astm' AND sha256 = ?", (sha256,)).fetchone()
        if earlier:
            return Receipt(int(earlier[0]), Kept.DUPLICATE, 1)
        item_id = _insert_message_item(conn, "astm", raw, sha256, sender, received_at)
        conn.execute(
            "INSERT INTO astm_messages (item_id, listener, instrument, sample_ids, patient_ids, test_codes,"
            " result_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item_id, sender.name, summary.instrument, summary.sample_ids, summary.patient_ids, summary.test_codes,
             summary.result_count))
        link_result(conn, item_id, summary.sample_ids.split(), received_at)
        return Receipt(item_id, Kept.STORED, 1)

    return write


def _insert_message_item(conn: sqlite3.Connection, kind: ItemKind, raw: bytes | bytearray, sha256: str, sender: Sender,
                         at: float) -> int:
    """The item of a message kept in the journal itself (HL7, ASTM): its row and its bytes."""
    cursor = conn.execute(
        "INSERT INTO items (kind, received_at, sender, peer_address, size, sha256) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, at, sender.name, sender.address, len(raw), sha256))
    item_id = int(cursor.lastrowid or 0)
    _insert_payload(conn, item_id, raw)
    return item_id


def _insert_payload(conn: sqlite3.Connection, item_id: int, data: bytes | bytearray) -> None:
    """Binding a large BLOB makes SQLite copy it whole (twice, with the record around it);
    writing it into a zeroblob through incremental I/O goes page by page instead."""
    if len(data) <= _BLOB_CHUNK:
        conn.execute("INSERT INTO payloads (item_id, data) VALUES (?, ?)", (item_id, data))
        return
    conn.execute("INSERT INTO payloads (item_id, data) VALUES (?, zeroblob(?))", (item_id, len(data)))
    view = memoryview(data)
    with conn.blobopen("payloads", "data", item_id) as blob:
        for start in range(0, len(data), _BLOB_CHUNK):
            blob.write(view[start : start + _BLOB_CHUNK])


def record_hl7_details(details: list[tuple[int, Hl7Details]], at: float) -> Write[None]:
    def write(conn: sqlite3.Connection) -> None:
        for item_id, found in details:
            columns = asdict(found)
            conn.execute(
                f"UPDATE hl7_messages SET {', '.join(f'{c} = ?' for c in columns)}, details_read = 1 WHERE item_id = ?",
                (*columns.values(), item_id),
            )
            if found.placer_order_number:
                link_result(conn, item_id, [found.placer_order_number], at)

    return write


def record_contact(sender: Sender, at: float) -> Write[None]:
    """A sender was heard from without sending an item (a C-ECHO): first/last seen only."""

    def write(conn: sqlite3.Connection) -> None:
        _touch_sender(conn, sender, at, items=0)

    return write


def mark_delivered(item_ids: list[int], at: float) -> Write[list[int]]:
    """Items the pull side has taken; returns those that were not delivered before."""

    def write(conn: sqlite3.Connection) -> list[int]:
        changed = []
        for item_id in item_ids:
            row = conn.execute(
                "UPDATE items SET state = 'delivered', delivered_at = ? WHERE id = ? AND state != 'delivered'"
                " RETURNING id",
                (at, item_id),
            ).fetchone()
            if row:
                changed.append(int(row[0]))
        return changed

    return write


def record_event(kind: str, detail: str, at: float) -> Write[None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (at, kind, detail))

    return write


def complete_quiet_studies(quiet_since: float, now: float) -> Write[list[str]]:
    """Mark studies complete that got no instance since `quiet_since`; return their UIDs."""

    def write(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "UPDATE studies SET completed_at = ? WHERE completed_at IS NULL AND last_received_at < ?"
            " RETURNING study_instance_uid",
            (now, quiet_since),
        ).fetchall()
        return [row[0] for row in rows]

    return write


def _insert_item(conn: sqlite3.Connection, kind: ItemKind, spooled: SpooledFile, sender: Sender, at: float) -> int:
    cursor = conn.execute(
        "INSERT INTO items (kind, received_at, sender, peer_address, spool_path, size, sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, at, sender.name, sender.address, spooled.relative_path, spooled.size, spooled.sha256),
    )
    return int(cursor.lastrowid or 0)


def _touch_sender(conn: sqlite3.Connection, sender: Sender, at: float, items: int = 1) -> None:
    conn.execute(
        "INSERT INTO senders (protocol, name, address, first_seen_at, last_seen_at, items) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (protocol, name, address) DO UPDATE SET last_seen_at = excluded.last_seen_at,"
        " items = items + excluded.items",
        (sender.protocol, sender.name, sender.address, at, at, items),
    )


def _touch_study(conn: sqlite3.Connection, instance: DicomInstance, at: float, new_instance: bool) -> None:
    """Count the instance into its study (a new version of a known SOP Instance UID is not
    another instance); anything late reopens a completed study."""
    conn.execute(
        "INSERT INTO studies (study_instance_uid, patient_id, patient_name, accession_number, study_date,"
        " modalities, instance_count, first_received_at, last_received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (study_instance_uid) DO UPDATE SET"
        "  instance_count = instance_count + excluded.instance_count,"
        "  last_received_at = excluded.last_received_at, completed_at = NULL,"
        "  modalities = CASE WHEN excluded.modalities = ''"
        "    OR instr(' ' || modalities || ' ', ' ' || excluded.modalities || ' ')"
        "   THEN modalities ELSE trim(modalities || ' ' || excluded.modalities) END",
        (
            instance.study_instance_uid,
            instance.patient_id,
            instance.patient_name,
            instance.accession_number,
            instance.study_date,
            instance.modality or "",
            int(new_instance),
            at,
            at,
        ),
    )

