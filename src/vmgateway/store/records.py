"""What receivers hand to the store, and the journal writes that record it.

The receivers describe what they received in these plain dataclasses; they never see SQL.
The write functions run inside the journal's writer thread (see journal.py), which is what
makes the duplicate check and the version number race-free across associations.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from enum import Enum

from vmgateway.store.journal import Write
from vmgateway.store.spool import SpooledFile


@dataclass(frozen=True, slots=True)
class Sender:
    protocol: str
    """'dicom' or 'hl7'."""
    name: str
    """The calling AE title, or the HL7 sending application."""
    address: str
    """The peer's IP address."""


@dataclass(frozen=True, slots=True)
class DicomInstance:
    """The journal's view of one received instance; text already decoded with its charset."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    study_date: str | None = None
    species: str | None = None
    breed: str | None = None
    responsible_person: str | None = None


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    """Same SOP Instance UID, same bytes: already kept, nothing new recorded."""
    NEW_VERSION = "new_version"
    """Same SOP Instance UID, different bytes: kept beside the earlier version(s)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    item_id: int
    outcome: Outcome
    version: int


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
                return Receipt(item_id, Outcome.DUPLICATE, version)
        version = versions[-1][1] + 1 if versions else 1
        item_id = _insert_item(conn, "dicom", spooled, sender, received_at)
        columns = asdict(instance) | {"item_id": item_id, "version": version}
        conn.execute(
            f"INSERT INTO dicom_instances ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            tuple(columns.values()),
        )
        if instance.study_instance_uid:
            _touch_study(conn, instance, received_at, new_instance=not versions)
        return Receipt(item_id, Outcome.NEW_VERSION if versions else Outcome.STORED, version)

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


def _insert_item(conn: sqlite3.Connection, kind: str, spooled: SpooledFile, sender: Sender, at: float) -> int:
    cursor = conn.execute(
        "INSERT INTO items (kind, received_at, sender, peer_address, spool_path, size, sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, at, sender.name, sender.address, spooled.relative_path, spooled.size, spooled.sha256),
    )
    return int(cursor.lastrowid or 0)


def _touch_sender(conn: sqlite3.Connection, sender: Sender, at: float) -> None:
    conn.execute(
        "INSERT INTO senders (protocol, name, address, first_seen_at, last_seen_at, items) VALUES (?, ?, ?, ?, ?, 1)"
        " ON CONFLICT (protocol, name, address) DO UPDATE SET last_seen_at = excluded.last_seen_at, items = items + 1",
        (sender.protocol, sender.name, sender.address, at, at),
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

