"""What the power-cut tests keep: every item a sender was told was kept, and the check after a
restart that each is there, whole, exactly once."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.support.dicomdata import dataset_differences
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import Orthanc
from tests.support.upstream import Upstream


@dataclass
class Ledger:
    """What the senders were told was kept, over all cuts."""

    dicom: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID → the file sent, since the last check."""
    checked: dict[str, tuple[str, str]] = field(default_factory=dict)
    """SOP Instance UID → (spool path, SHA-256) of those compared with the file sent at an earlier
    check: from then on a spool file never changes, so later checks need not read it again."""
    hl7: list[bytes] = field(default_factory=list)
    astm: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_dicom(self, paths: list[Path]) -> None:
        with self.lock:
            self.dicom.update({pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in paths})

    def add_hl7(self, message: bytes) -> None:
        with self.lock:
            self.hl7.append(message)


@dataclass
class Check:
    acknowledged: int
    kept: int
    lost: list[str]
    problems: list[str]


@dataclass
class Load:
    """The gateway under load: its peers, and what each sender was told."""

    gateway: GatewayProcess
    token: str
    astm_port: int
    orthanc: Orthanc
    upstream: Upstream
    ledger: Ledger = field(default_factory=Ledger)
    archived: set[str] = field(default_factory=set)
    """SOP Instance UIDs seen in Orthanc at an earlier check."""


def check_after_restart(gateway: GatewayProcess, ledger: Ledger, load: Load | None = None) -> Check:
    """Start the gateway again on what the disk kept; compare with what senders were told (and,
    under `load`, what the journal calls delivered with what the upstreams confirmed). The gateway
    runs again afterwards."""
    problems = []
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "journal.sqlite")) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    # Started, it clears what the cut left; stopped again, it leaves the journal to this process alone
    # (two processes sharing SQLite's memory-mapped index through FUSE once gave a read an I/O error).
    # Every connection this process opens is closed before the next cut: one left to the garbage
    # collector touched its memory map of a file system already cut, and the test died of SIGBUS.
    gateway.start()
    assert gateway.stop() == 0
    rows = {row["sop_instance_uid"]: row for row in gateway.instances()}
    known = {path for path, _ in ledger.checked.values()}
    lost = []
    for uid, (path, sha256) in ledger.checked.items():
        row = rows.get(uid)
        if row is None or (row["spool_path"], row["sha256"]) != (path, sha256):
            lost.append(f"DICOM {uid}: gone since an earlier check")
    for uid, row in rows.items():  # those fetched from the PACS included
        stored = gateway.data_dir / "spool" / row["spool_path"]
        if row["spool_path"] in known:
            if not stored.is_file() or stored.stat().st_size != row["size"]:
                lost.append(f"DICOM {uid}: its file is gone or changed since an earlier check")
        elif stored.is_file() and hashlib.sha256(stored.read_bytes()).hexdigest() != row["sha256"]:
            lost.append(f"DICOM {uid}: the file's bytes are not those received")
    for uid, sent in ledger.dicom.items():
        row = rows.get(uid)
        stored = gateway.data_dir / "spool" / row["spool_path"] if row else None
        if row is None or stored is None or not stored.is_file():
            lost.append(f"DICOM {uid}: {'no journal row' if row is None else 'no file'}")
        elif stored.stat().st_size != row["size"]:
            lost.append(f"DICOM {uid}: {stored.stat().st_size} bytes kept of {row['size']}")
        elif differences := dataset_differences(pydicom.dcmread(sent), pydicom.dcmread(stored)):
            lost.append(f"DICOM {uid}: {differences[:3]}")
        else:
            ledger.checked[uid] = (row["spool_path"], row["sha256"])
    with contextlib.closing(gateway.journal()) as conn:
        payloads = {bytes(row[0]) for row in conn.execute("SELECT data FROM payloads")}
    lost += [f"HL7 {m.split(b'|')[9].decode()}: missing" for m in ledger.hl7 if m not in payloads]
    lost += [f"ASTM {m[:60]!r}: missing" for m in ledger.astm if m not in payloads]
    spool = {str(p.relative_to(gateway.data_dir / "spool")) for p in gateway.spool_files()}
    recorded = {row["spool_path"] for row in gateway.instances()}
    if spool != recorded:
        problems.append(f"spool and journal differ: {sorted(spool ^ recorded)[:5]}")
    if gateway.incoming_files():
        problems.append(f"partial files left: {gateway.incoming_files()[:5]}")
    if load is not None:
        problems += unconfirmed_deliveries(gateway, load)
    acknowledged = len(ledger.checked.keys() | ledger.dicom.keys()) + len(ledger.hl7) + len(ledger.astm)
    if not lost:
        ledger.dicom.clear()  # all in `checked` now: the files sent may go
    gateway.start()
    return Check(acknowledged, acknowledged - len(lost), lost, problems)


def unconfirmed_deliveries(gateway: GatewayProcess, load: Load) -> list[str]:
    """What the journal calls delivered must be what the upstreams have: read after the journal,
    so that whatever it calls delivered was confirmed before."""
    with contextlib.closing(gateway.journal()) as conn:
        messages = {bytes(row[0]) for row in conn.execute(
            "SELECT p.data FROM items i JOIN payloads p ON p.item_id = i.id WHERE i.state = 'delivered'")}
        instances = {row[0] for row in conn.execute(
            "SELECT d.sop_instance_uid FROM items i JOIN dicom_instances d ON d.item_id = i.id"
            " WHERE i.state = 'delivered'")}
    with load.upstream.changed:
        confirmed = {request.body for request in load.upstream.received}
    unarchived = []
    with load.orthanc.rest() as rest:  # those delivered since the last check (Orthanc forgets nothing)
        for uid in instances - load.archived:
            if any(found["Type"] == "Instance" for found in rest.post("/tools/lookup", content=uid).json()):
                load.archived.add(uid)
            else:
                unarchived.append(uid)
    problems = []
    if messages - confirmed:
        problems.append(f"{len(messages - confirmed)} message(s) delivered that the upstream never answered")
    if unarchived:
        problems.append(f"{len(unarchived)} instance(s) delivered that Orthanc does not hold")
    return problems
