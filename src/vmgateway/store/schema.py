"""The journal's schema and its forward migrations.

`PRAGMA user_version` holds the number of migrations applied. A migration is appended to
MIGRATIONS and never edited once released: boxes in the field upgrade by running the ones
they have not seen yet, each in its own transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: items (one row, one life: received -> delivered | failed -> dead), DICOM instances,
    #    studies, senders and events. spool_path is NULL when the payload is in the journal.
    """
    CREATE TABLE items (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL,
        state         TEXT NOT NULL DEFAULT 'received',
        received_at   REAL NOT NULL,
        sender        TEXT NOT NULL,
        peer_address  TEXT NOT NULL,
        spool_path    TEXT,
        size          INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        next_try_at   REAL,
        last_error    TEXT,
        delivered_at  REAL
    );
    CREATE INDEX items_received_at ON items (received_at);
    CREATE INDEX items_state ON items (state);

    CREATE TABLE dicom_instances (
        item_id              INTEGER PRIMARY KEY REFERENCES items (id),
        sop_instance_uid     TEXT NOT NULL,
        version              INTEGER NOT NULL,
        sop_class_uid        TEXT NOT NULL,
        transfer_syntax_uid  TEXT NOT NULL,
        study_instance_uid   TEXT,
        series_instance_uid  TEXT,
        patient_id           TEXT,
        patient_name         TEXT,
        accession_number     TEXT,
        modality             TEXT,
        study_date           TEXT,
        species              TEXT,
        breed                TEXT,
        responsible_person   TEXT,
        UNIQUE (sop_instance_uid, version)
    );
    CREATE INDEX dicom_instances_study ON dicom_instances (study_instance_uid);

    CREATE TABLE studies (
        study_instance_uid  TEXT PRIMARY KEY,
        patient_id          TEXT,
        patient_name        TEXT,
        accession_number    TEXT,
        study_date          TEXT,
        modalities          TEXT NOT NULL DEFAULT '',
        instance_count      INTEGER NOT NULL DEFAULT 0,
        first_received_at   REAL NOT NULL,
        last_received_at    REAL NOT NULL,
        completed_at        REAL
    );
    CREATE INDEX studies_arriving ON studies (last_received_at) WHERE completed_at IS NULL;

    CREATE TABLE senders (
        protocol       TEXT NOT NULL,
        name           TEXT NOT NULL,
        address        TEXT NOT NULL,
        first_seen_at  REAL NOT NULL,
        last_seen_at   REAL NOT NULL,
        items          INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (protocol, name, address)
    );

    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      REAL NOT NULL,
        kind    TEXT NOT NULL,
        detail  TEXT NOT NULL DEFAULT ''
    );
    """,
    # 2: HL7 messages. Their raw bytes live in the journal (payloads), not in spool files: a
    #    message is small, and one WAL fsync then makes both data and record durable.
    """
    CREATE TABLE payloads (
        item_id  INTEGER PRIMARY KEY REFERENCES items (id),
        data     BLOB NOT NULL
    );
    CREATE INDEX items_sha256 ON items (sha256);

    CREATE TABLE hl7_messages (
        item_id                INTEGER PRIMARY KEY REFERENCES items (id),
        sending_application    TEXT NOT NULL,
        sending_facility       TEXT NOT NULL,
        receiving_application  TEXT NOT NULL,
        receiving_facility     TEXT NOT NULL,
        message_type           TEXT NOT NULL,
        trigger_event          TEXT NOT NULL,
        control_id             TEXT NOT NULL,
        processing_id          TEXT NOT NULL,
        version                TEXT NOT NULL,
        accept_ack_type        TEXT NOT NULL,
        application_ack_type   TEXT NOT NULL,
        charset                TEXT NOT NULL,
        charset_used           TEXT,
        patient_id             TEXT,
        patient_name           TEXT,
        placer_order_number    TEXT,
        filler_order_number    TEXT,
        observation_count      INTEGER,
        details_read           INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX hl7_messages_control_id
        ON hl7_messages (sending_application, sending_facility, control_id);
    CREATE INDEX hl7_messages_details_pending ON hl7_messages (item_id) WHERE details_read = 0;
    """,
    # 3: the management API: tokens (only their SHA-256 is kept) and switches such as whether
    #    transfers are active; spool paths indexed for the orphan sweep at start.
    """
    CREATE TABLE api_tokens (
        name          TEXT PRIMARY KEY,
        sha256        TEXT NOT NULL UNIQUE,
        created_at    REAL NOT NULL,
        revoked_at    REAL,
        last_used_at  REAL
    );

    CREATE TABLE settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );

    CREATE INDEX items_spool_path ON items (spool_path);
    """,
    # 4: push transfers and retention: the next due item of a kind is found by (state, kind, id);
    #    removed_at says when a delivered item's file was removed (its spool_path is then NULL).
    """
    CREATE INDEX items_due ON items (state, kind, id);
    ALTER TABLE items ADD COLUMN removed_at REAL;
    CREATE INDEX items_removable ON items (delivered_at) WHERE state = 'delivered' AND spool_path IS NOT NULL;
    """,
    # 5: the Modality Worklist, and which received instances belong to which order
    """
    CREATE TABLE worklist (
        order_id            TEXT PRIMARY KEY,
        accession_number    TEXT NOT NULL,
        study_instance_uid  TEXT,
        scheduled_at        TEXT NOT NULL,
        entry               TEXT NOT NULL,
        state               TEXT NOT NULL DEFAULT 'scheduled',
        created_at          REAL NOT NULL,
        updated_at          REAL NOT NULL,
        expires_at          REAL NOT NULL,
        performed_at        REAL
    );
    CREATE INDEX worklist_accession ON worklist (accession_number);
    CREATE INDEX worklist_study ON worklist (study_instance_uid);
    CREATE TABLE worklist_links (
        item_id   INTEGER PRIMARY KEY REFERENCES items (id),
        order_id  TEXT NOT NULL REFERENCES worklist (order_id)
    );
    """,
    # 6: Modality Performed Procedure Steps a modality reports (N-CREATE, N-SET)
    """
    CREATE TABLE mpps (
        sop_instance_uid  TEXT PRIMARY KEY,
        order_id          TEXT REFERENCES worklist (order_id),
        status            TEXT NOT NULL,
        attributes        TEXT NOT NULL,
        calling_ae        TEXT NOT NULL,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL
    );
    CREATE INDEX mpps_order ON mpps (order_id);
    """,
    # 7: ASTM E1394 messages from lab instruments (raw bytes in payloads)
    """
    CREATE TABLE astm_messages (
        item_id       INTEGER PRIMARY KEY REFERENCES items (id),
        listener      TEXT NOT NULL,
        instrument    TEXT NOT NULL,
        sample_ids    TEXT NOT NULL,
        patient_ids   TEXT NOT NULL,
        test_codes    TEXT NOT NULL,
        result_count  INTEGER NOT NULL
    );
    """,
    # 8: token scopes: `monitoring` tokens read status and metrics only (one shared by a fleet)
    """
    ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'all';
    """,
    # 9: lab orders out: each order, the queue of HL7 messages for its instrument (in order), results linked
    """
    CREATE TABLE lab_orders (
        order_id    TEXT PRIMARY KEY,
        instrument  TEXT NOT NULL,
        body        TEXT NOT NULL,
        state       TEXT NOT NULL,
        cancelled   INTEGER NOT NULL DEFAULT 0,
        last_answer TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX lab_orders_state ON lab_orders (state);
    CREATE TABLE lab_messages (
        id              INTEGER PRIMARY KEY,
        order_id        TEXT NOT NULL REFERENCES lab_orders (order_id),
        instrument      TEXT NOT NULL,
        control         TEXT NOT NULL,
        control_id      TEXT NOT NULL,
        message         BLOB NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        answer          TEXT,
        created_at      REAL NOT NULL,
        answered_at     REAL
    );
    CREATE INDEX lab_messages_queue ON lab_messages (instrument, state, id);
    CREATE TABLE lab_links (
        item_id  INTEGER PRIMARY KEY REFERENCES items (id),
        order_id TEXT NOT NULL REFERENCES lab_orders (order_id)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The journal was written by a newer vmgateway; running an older one could corrupt it."""


MIGRATION_MARKER = "migrating"
"""A file beside the journal while migrations run: an upgrade waits longer for its health check."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, marker: Path | None = None) -> int:
    """Bring the schema up to SCHEMA_VERSION; return the version found before."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the journal has schema version {found}, this vmgateway knows up to {SCHEMA_VERSION}"
        )
    if found == SCHEMA_VERSION:
        return found
    if marker is not None:
        marker.write_text(f"{found} -> {SCHEMA_VERSION}\n")
    try:
        _apply(conn, found)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    return found


def _apply(conn: sqlite3.Connection, found: int) -> None:
    for number in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    return [s.strip() for s in script.split(";") if s.strip()]
