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
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import GatewayProcess
from tests.crashfs import CrashFs
from tests.dicomdata import copies_of_ct_small, dataset_differences, secondary_capture
from tests.test_api import client, new_token
from tests.test_durability import _storescu_acknowledged
from tests.test_hl7_receiver import HEMATOLOGY, Peer, frame, msa, with_control_id
from tests.upstream import Upstream

CUTS = int(os.environ.get("VMGATEWAY_POWER_CUTS", "3"))
LARGE_MB = int(os.environ.get("VMGATEWAY_LARGE_MB", "12"))
SEED = int(os.environ.get("VMGATEWAY_POWER_CUT_SEED", "20261203"))


@pytest.fixture
def crashfs(tmp_path: Path) -> Iterator[CrashFs]:
    fs = CrashFs(tmp_path / "data", tmp_path / "disk").mount()
    yield fs
    fs.unmount()


@dataclass
class Ledger:
    """What the senders were told was kept, over all cuts."""

    dicom: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID → the file sent."""
    hl7: list[bytes] = field(default_factory=list)
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


def cut_under_load(fs: CrashFs, gateway: GatewayProcess, ledger: Ledger, folder: Path, after: int,
                   large_mb: int) -> None:
    """Senders on three DICOM associations (one with a large instance) and two HL7 connections;
    the power goes after `after` instances were acknowledged on the first association."""
    folder.mkdir(parents=True)
    large = [secondary_capture(folder / "large.dcm", frames=large_mb, rows=1024, columns=1024)] if large_mb else []
    batches = [copies_of_ct_small(folder / "a", 400), copies_of_ct_small(folder / "b", 200) + large,
               copies_of_ct_small(folder / "c", 200)]

    def store(files: list[Path], on_ack: Callable[[], None], after: int) -> None:
        ledger.add_dicom(_storescu_acknowledged(gateway, files, on_ack=on_ack, after=after))

    def power_cut() -> None:
        fs.cut()
        gateway.kill()

    senders = [threading.Thread(target=store, args=(batches[0], power_cut, after)),
               threading.Thread(target=store, args=(batches[1], lambda: None, 0)),
               threading.Thread(target=store, args=(batches[2], lambda: None, 0))]
    senders += [threading.Thread(target=send_hl7_until_cut, args=(gateway, ledger, f"{folder.name}-{n}"))
                for n in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
        assert not sender.is_alive(), "a sender outlived the power cut"
    assert gateway.proc is not None and gateway.proc.poll() is not None, "the first association never got that far"


def check_after_restart(gateway: GatewayProcess, ledger: Ledger, upstream: Upstream | None = None) -> Check:
    """Start the gateway again on what the disk kept; compare with what senders were told (and,
    with `upstream`, what it confirmed with what the journal says was delivered)."""
    problems = []
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "journal.sqlite")) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    gateway.start()
    rows = {row["sop_instance_uid"]: row for row in gateway.instances()}
    lost = []
    for uid, path in ledger.dicom.items():
        row = rows.get(uid)
        stored = gateway.data_dir / "spool" / row["spool_path"] if row else None
        if row is None or stored is None or not stored.is_file():
            lost.append(f"DICOM {uid}: {'no journal row' if row is None else 'no file'}")
        elif hashlib.sha256(stored.read_bytes()).hexdigest() != row["sha256"]:
            lost.append(f"DICOM {uid}: the file's bytes are not those received")
        elif differences := dataset_differences(pydicom.dcmread(path), pydicom.dcmread(stored)):
            lost.append(f"DICOM {uid}: {differences[:3]}")
    kept_hl7 = {bytes(row["data"]) for row in gateway.hl7_messages()}
    lost += [f"HL7 {m.split(b'|')[9].decode()}: missing" for m in ledger.hl7 if m not in kept_hl7]
    spool = {str(p.relative_to(gateway.data_dir / "spool")) for p in gateway.spool_files()}
    recorded = {row["spool_path"] for row in gateway.instances()}
    if spool != recorded:
        problems.append(f"spool and journal differ: {sorted(spool ^ recorded)[:5]}")
    if gateway.incoming_files():
        problems.append(f"partial files left: {gateway.incoming_files()[:5]}")
    if upstream is not None:
        with contextlib.closing(gateway.journal()) as conn:
            delivered = {bytes(row[0]) for row in conn.execute(
                "SELECT p.data FROM items i JOIN payloads p ON p.item_id = i.id WHERE i.state = 'delivered'")}
        with upstream.changed:  # read after the journal: whatever it calls delivered was answered before
            confirmed = {request.body for request in upstream.received}
        if unconfirmed := delivered - confirmed:
            problems.append(f"{len(unconfirmed)} item(s) delivered that the upstream never answered")
    acknowledged = len(ledger.dicom) + len(ledger.hl7)
    return Check(acknowledged, acknowledged - len(lost), lost, problems)


def test_power_cuts_under_load_lose_nothing_acknowledged(crashfs: CrashFs, make_gateway: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = Ledger()
    with Upstream() as upstream:
        gateway: GatewayProcess = make_gateway(
            storage={"data_dir": str(crashfs.mountpoint)},
            transfers={"mode": "push", "hl7_url": upstream.url, "allow_plain_http": True})
        with client(gateway, new_token(gateway, "vetmanager")) as api:
            assert api.post("/api/v1/transfers/activate").status_code == 200
        for cut in range(CUTS):
            cut_under_load(crashfs, gateway, ledger, tmp_path / f"round{cut}", rng.randrange(5, 120), LARGE_MB)
            crashfs.mount()
            check = check_after_restart(gateway, ledger, upstream)
            print(f"cut {cut + 1}/{CUTS}: acknowledged {check.acknowledged}, kept {check.kept}, "
                  f"lost {len(check.lost)}")
            assert (check.lost, check.problems) == ([], []), f"after cut {cut + 1}"
        assert gateway.stop() == 0
    assert len(ledger.dicom) > CUTS * 5 and ledger.hl7, "the load did not reach the gateway"


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
