"""Disk faults on the data folder (tests/support/crashfs.py): an fsync that fails, a disk that fills.

An fsync that fails is a failure the sender hears (C-STORE 0xA700, HL7 `AE`, ASTM NAK), never a
success; the data is not trusted afterwards — the test file system drops what it held, as Linux
does, so a gateway that retried the fsync and believed it would lose the item at the next power
cut, which each test ends with. A journal whose commits fail shows in status until one succeeds.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from tests.support.astm_instrument import Instrument, result_message
from tests.support.clients import client, new_token
from tests.support.crashfs import CrashFs
from tests.support.dicomdata import copies_of_ct_small, secondary_capture
from tests.support.gateway import GatewayProcess, free_ports
from tests.support.hl7_peer import HEMATOLOGY, hl7_answer, with_control_id
from tests.support.ledger import Ledger, check_after_restart


def store_one(gateway: GatewayProcess, path: Path, sop_class: str = CTImageStorage) -> int:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


@pytest.mark.peer
@pytest.mark.parametrize("failing", ["/spool/incoming/", "/spool/dicom/"],
                         ids=["the received file", "the spool folder that names it"])
def test_a_failed_fsync_of_a_received_instance_answers_out_of_resources_and_records_nothing(
        crashfs: CrashFs, make_gateway: Any, tmp_path: Path, failing: str) -> None:
    """Either fsync the promise needs. The journal's SQL runs beside the folder's fsync: its row
    must still never be committed when that fsync fails."""
    gateway: GatewayProcess = make_gateway(storage={"data_dir": str(crashfs.mountpoint)})
    (path,) = copies_of_ct_small(tmp_path / "ct", 1)
    crashfs.ask("fail_fsync", after=0, path=failing)
    assert store_one(gateway, path) == 0xA700
    assert crashfs.ask("stats")["failed"][0].startswith(failing)
    assert gateway.instances() == [] and gateway.incoming_files() == []  # nothing of it trusted, nothing left

    assert store_one(gateway, path) == 0x0000  # the modality sends it again: kept
    assert len(gateway.instances()) == 1
    ledger = Ledger()
    ledger.add_dicom([path])
    crashfs.cut()
    gateway.kill()
    crashfs.mount()
    check = check_after_restart(gateway, ledger)
    assert (check.lost, check.problems) == ([], [])


@pytest.mark.peer
def test_a_journal_that_fails_its_fsync_acknowledges_nothing_and_says_so_until_it_commits_again(
        crashfs: CrashFs, make_gateway: Any) -> None:
    (astm_port,) = free_ports(1)
    gateway: GatewayProcess = make_gateway(
        storage={"data_dir": str(crashfs.mountpoint)},
        astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": astm_port}]})
    token = new_token(gateway, "vetmanager")
    ledger = Ledger()

    crashfs.ask("fail_fsync", after=0, path="/journal.sqlite-wal")
    assert hl7_answer(gateway, with_control_id(HEMATOLOGY, "EIO-1")) == "AE"
    with client(gateway, token) as api:
        status = api.get("/api/v1/status").json()
    journal = status["components"]["journal"]
    assert journal["state"] == "failing" and "disk I/O error" in journal["last_error"], journal
    reasons = [(reason["code"], reason["text"]) for reason in status["overall"]["reasons"]]
    assert ("component", "journal is failing") in reasons and status["overall"]["state"] == "attention"
    assert "vmgateway_component_up{component=\"journal\"} 0.0" in api_metrics(gateway, token)

    accepted = with_control_id(HEMATOLOGY, "EIO-2")
    assert hl7_answer(gateway, accepted) == "AA"  # the next commit succeeds: acknowledged again
    ledger.add_hl7(accepted)
    with client(gateway, token) as api:
        assert api.get("/api/v1/status").json()["components"]["journal"]["state"] == "ok"

    crashfs.ask("fail_fsync", after=0, path="/journal.sqlite-wal")
    instrument = Instrument("127.0.0.1", astm_port).connect()
    try:  # the final frame is NAKed while the commit fails; sent again, it is kept
        assert instrument.send_message(result_message("EIO-3", "VM-1"))
    finally:
        instrument.close()
    assert instrument.naks == 1
    ledger.astm += instrument.acknowledged_messages

    crashfs.cut()
    gateway.kill()
    crashfs.mount()
    check = check_after_restart(gateway, ledger)
    assert (check.lost, check.problems) == ([], [])
    with contextlib.closing(gateway.journal()) as conn:
        assert conn.execute("SELECT count(*) FROM astm_messages").fetchone()[0] == 1  # kept once


def api_metrics(gateway: GatewayProcess, token: str) -> str:
    with client(gateway, token) as api:
        return api.get("/api/v1/metrics").text


@pytest.mark.peer
def test_a_full_disk_refuses_with_failure_statuses_and_accepts_again_once_space_is_back(
        crashfs: CrashFs, make_gateway: Any, tmp_path: Path) -> None:
    """No watermark here (storage.min_free_mb = 0): the writes themselves find the disk full, the
    spool's (ENOSPC) and the journal's own (SQLITE_FULL)."""
    gateway: GatewayProcess = make_gateway(storage={"data_dir": str(crashfs.mountpoint), "min_free_mb": 0})
    token = new_token(gateway, "vetmanager")
    ledger = Ledger()
    small, = copies_of_ct_small(tmp_path / "ct", 1)
    large = secondary_capture(tmp_path / "large.dcm", frames=4, rows=512, columns=512)
    assert store_one(gateway, small) == 0x0000
    ledger.add_dicom([small])

    crashfs.ask("quota", bytes=crashfs.ask("stats")["used"] + 1024)
    assert store_one(gateway, large, SecondaryCaptureImageStorage) == 0xA700
    assert hl7_answer(gateway, with_control_id(HEMATOLOGY, "FULL-1")) == "AE"
    assert gateway.incoming_files() == [] and len(gateway.instances()) == 1  # nothing partial kept
    with client(gateway, token) as api:
        journal = api.get("/api/v1/status").json()["components"]["journal"]
    assert journal["state"] == "failing" and "full" in journal["last_error"], journal

    crashfs.ask("quota", bytes=None)  # space comes back: accepted again, no restart
    refilled = with_control_id(HEMATOLOGY, "FULL-2")
    assert hl7_answer(gateway, refilled) == "AA"
    assert store_one(gateway, large, SecondaryCaptureImageStorage) == 0x0000
    ledger.add_hl7(refilled)
    ledger.add_dicom([large])
    with client(gateway, token) as api:
        assert api.get("/api/v1/status").json()["components"]["journal"]["state"] == "ok"

    crashfs.cut()
    gateway.kill()
    crashfs.mount()
    check = check_after_restart(gateway, ledger)
    assert (check.lost, check.problems) == ([], [])
