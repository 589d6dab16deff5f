"""Power cuts: the gateway's data folder on a file system that forgets what was not fsync'ed
(tests/crashfs.py), cut under load, restarted, checked.

After every cut, every instance and message a sender was told succeeded is there with identical
bytes, `PRAGMA integrity_check` is ok, the spool and the journal name the same files, and nothing
is marked delivered that the upstream did not answer. A handful of seeded cuts run in CI; the long
run (README, "Reliability") is the same test with more cuts:

    VMGATEWAY_POWER_CUTS=100 VMGATEWAY_LARGE_MB=100 .venv/bin/python -m pytest tests/test_power_cuts.py -k under_load -s

And the test is shown to catch what it must: with one fsync taken out of the gateway
(tests/mutants.py), a single cut loses an acknowledged item.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.astm_instrument import Instrument, result_message
from tests.conftest import GatewayProcess, free_ports
from tests.crashfs import CrashFs
from tests.dicomdata import copies_of_ct_small, dataset_differences, secondary_capture
from tests.netns import loopback_only
from tests.orthanc import Orthanc
from tests.test_api import client, new_token
from tests.test_durability import _storescu_acknowledged
from tests.test_hl7_receiver import HEMATOLOGY, Peer, frame, msa, with_control_id
from tests.test_pacs import dated_today
from tests.upstream import Upstream

CUTS = int(os.environ.get("VMGATEWAY_POWER_CUTS", "3"))
LARGE_MB = int(os.environ.get("VMGATEWAY_LARGE_MB", "12"))
SEED = int(os.environ.get("VMGATEWAY_POWER_CUT_SEED", "20261203"))


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


def send_hl7_until_cut(gateway: GatewayProcess, ledger: Ledger, prefix: str) -> None:
    """One connection sending results one after another until the gateway goes away."""
    try:
        peer = Peer(gateway.hl7_port)
        for number in range(100_000):
            message = with_control_id(HEMATOLOGY, f"{prefix}-{number:05d}")
            peer.send(frame(message))
            if msa(peer.ack())[1] == "AA":
                ledger.add_hl7(message)
    except OSError:  # ConnectionError included: the power went
        pass


def send_astm_until_cut(port: int, ledger: Ledger, prefix: str) -> None:
    """An analyzer sending result sets one after another until the gateway goes away."""
    instrument = Instrument("127.0.0.1", port)
    try:
        instrument.connect()
        for number in range(100_000):
            instrument.send_message(result_message(f"{prefix}-{number}", "VM-1"))
    except (OSError, AssertionError):  # the power went (an establishment unanswered included)
        pass
    finally:
        instrument.close()
        with ledger.lock:
            ledger.astm += instrument.acknowledged_messages


def poll_pacs_until_cut(gateway: GatewayProcess, token: str) -> None:
    """Vetmanager asking for PACS polls, one after another, until the gateway goes away."""
    try:
        with client(gateway, token) as api:
            for _ in range(10_000):
                api.post("/api/v1/pacs/poll", timeout=120)
    except httpx.HTTPError:
        pass


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


def cut_under_load(fs: CrashFs, load: Load, folder: Path, after: int, large_mb: int) -> None:
    """Three DICOM associations (one with a large instance), two HL7 connections, an ASTM analyzer,
    pushes to Orthanc (DICOMweb) and to an HL7 endpoint, PACS polls fetching a new study from
    Orthanc; the power goes after `after` instances were acknowledged on the first association."""
    gateway, ledger = load.gateway, load.ledger
    folder.mkdir(parents=True)
    load.orthanc.upload_all(dated_today(copies_of_ct_small(folder / "pacs", 20), folder / "pacs-today"))
    large = [secondary_capture(folder / "large.dcm", frames=large_mb, rows=1024, columns=1024)] if large_mb else []
    batches = [copies_of_ct_small(folder / "a", 400), large + copies_of_ct_small(folder / "b", 200),
               copies_of_ct_small(folder / "c", 200)]

    def store(files: list[Path], on_ack: Callable[[], None], after: int) -> None:
        ledger.add_dicom(_storescu_acknowledged(gateway, files, on_ack=on_ack, after=after))

    def power_cut() -> None:
        fs.cut()
        gateway.kill()

    senders = [threading.Thread(target=store, args=(batches[0], power_cut, after)),
               threading.Thread(target=store, args=(batches[1], lambda: None, 0)),
               threading.Thread(target=store, args=(batches[2], lambda: None, 0)),
               threading.Thread(target=send_astm_until_cut, args=(load.astm_port, ledger, folder.name)),
               threading.Thread(target=poll_pacs_until_cut, args=(gateway, load.token))]
    senders += [threading.Thread(target=send_hl7_until_cut, args=(gateway, ledger, f"{folder.name}-{n}"))
                for n in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
        assert not sender.is_alive(), "a sender outlived the power cut"
    assert gateway.proc is not None and gateway.proc.poll() is not None, "the first association never got that far"


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


@pytest.fixture
def network() -> Iterator[None]:
    with loopback_only():
        yield


def test_power_cuts_under_load_lose_nothing_acknowledged(crashfs: CrashFs, network: None, make_gateway: Any,
                                                         tmp_path: Path) -> None:
    rng = random.Random(SEED)
    dicom_port, hl7_port, api_port, astm_port, *orthanc_ports = free_ports(6)
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"gateway": ["VM_GATEWAY", "127.0.0.1", dicom_port]},
                      ports=orthanc_ports).start()
    try:
        with Upstream() as upstream:
            gateway: GatewayProcess = make_gateway(
                storage={"data_dir": str(crashfs.mountpoint)}, dicom={"port": dicom_port}, hl7={"port": hl7_port},
                api={"port": api_port},
                astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": astm_port}]},
                transfers={"mode": "push", "dicomweb_url": orthanc.dicomweb_url, "hl7_url": upstream.url,
                           "astm_url": upstream.url, "allow_plain_http": True},
                pacs={"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": "ORTHANC", "lookback_days": 1})
            token = new_token(gateway, "vetmanager")
            with client(gateway, token) as api:
                assert api.post("/api/v1/transfers/activate").status_code == 200
            load = Load(gateway, token, astm_port, orthanc, upstream)
            for cut in range(CUTS):
                cut_under_load(crashfs, load, tmp_path / f"round{cut}", rng.randrange(5, 120), LARGE_MB)
                crashfs.mount()
                check = check_after_restart(gateway, load.ledger, load)
                print(f"cut {cut + 1}/{CUTS}: acknowledged {check.acknowledged}, kept {check.kept}, "
                      f"lost {len(check.lost)}")
                assert (check.lost, check.problems) == ([], []), f"after cut {cut + 1}"
                shutil.rmtree(tmp_path / f"round{cut}")  # checked: the long run must not fill the disk
            assert gateway.stop() == 0
            with contextlib.closing(gateway.journal()) as conn:
                delivered = conn.execute("SELECT count(*) FROM items WHERE state = 'delivered'").fetchone()[0]
                fetched = conn.execute("SELECT coalesce(sum(items), 0) FROM senders WHERE protocol = 'pacs'").fetchone()[0]
            assert delivered and fetched, "pushes and PACS polls were part of the load"
    finally:
        orthanc.remove()
    ledger = load.ledger
    assert len(ledger.checked) > CUTS * 5 and ledger.hl7 and ledger.astm, "the load did not reach the gateway"
    print(f"{CUTS} power cuts: {len(ledger.checked)} DICOM instances, {len(ledger.hl7)} HL7 and {len(ledger.astm)} "
          f"ASTM messages acknowledged; lost 0")


@pytest.mark.parametrize("mutant", ["spool_directory_fsync", "spool_file_fsync", "journal_synchronous_normal"])
def test_with_one_fsync_taken_out_a_power_cut_loses_an_acknowledged_item(
        crashfs: CrashFs, make_gateway: Any, tmp_path: Path, mutant: str) -> None:
    gateway: GatewayProcess = make_gateway(start=False, storage={"data_dir": str(crashfs.mountpoint)})
    gateway.program = ["-m", "tests.mutants", mutant]
    gateway.start()
    ledger = Ledger()

    def power_cut() -> None:
        crashfs.cut()
        gateway.kill()

    ledger.add_dicom(_storescu_acknowledged(gateway, copies_of_ct_small(tmp_path / "ct", 100),
                                            on_ack=power_cut, after=30))
    crashfs.mount()
    check = check_after_restart(gateway, ledger)
    assert check.lost, f"{mutant}: nothing lost of {check.acknowledged} acknowledged — the test would prove nothing"
    missing = [row["item_id"] for row in gateway.instances()
               if not (gateway.data_dir / "spool" / row["spool_path"]).is_file()]
    assert bool(missing) == (mutant == "spool_directory_fsync")
    with client(gateway, new_token(gateway, "vetmanager")) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
        for item_id in missing[:3]:  # the journal names a file the disk lost: a clear answer, never a 500
            answer = api.get(f"/api/v1/items/{item_id}/content")
            assert answer.status_code == 410 and f"item {item_id}:" in answer.json()["detail"], answer.text
