"""What the gateway already holds of a study, to compare with what a PACS says it has."""

from __future__ import annotations

import sqlite3


def held_instances(conn: sqlite3.Connection, study_uid: str) -> dict[str, set[str]]:
    """SOP Instance UIDs held per Series Instance UID of the study (every version counts once)."""
    held: dict[str, set[str]] = {}
    for series_uid, sop_uid in conn.execute(
            "SELECT series_instance_uid, sop_instance_uid FROM dicom_instances WHERE study_instance_uid = ?",
            (study_uid,)):
        held.setdefault(series_uid or "", set()).add(sop_uid)
    return held
