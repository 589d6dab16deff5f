"""The DICOM receiver against real clients (dcmtk), and the bad inputs it must survive."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from tests.support.dicomdata import PYDICOM_FILES, copies_of_ct_small, secondary_capture
from tests.support.gateway import DCMTK_ENV, GatewayProcess, dcmtk, peak_rss_mb
from tests.support.storescu import send_as_it_is


def echoscu(gateway: GatewayProcess, calling: str = "ECHOSCU", called: str | None = None) -> Any:
    return dcmtk("echoscu", "-aet", calling, "-aec", called or gateway.ae_title, "127.0.0.1", str(gateway.port))


def storescu(gateway: GatewayProcess, *files: Path, calling: str = "STORESCU") -> Any:
    return dcmtk("storescu", "-nh", "-aet", calling, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files)


@pytest.mark.peer
def test_echo_and_called_ae_title(gateway: GatewayProcess) -> None:
    assert echoscu(gateway).returncode == 0
    wrong = echoscu(gateway, called="NOT_US")
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stdout
    assert '"reason": "permanently: called AE title not recognised"' in gateway.wait_for_log("association rejected")


@pytest.mark.peer
def test_only_allowed_calling_ae_titles(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"allowed_calling_aets": ["XRAY1", "US_ROOM2"]})
    assert echoscu(gateway, calling="XRAY1").returncode == 0
    stranger = echoscu(gateway, calling="STRANGER")
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stdout


@pytest.mark.peer
def test_called_ae_title_check_can_be_switched_off(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"require_called_ae": False})
    assert echoscu(gateway, called="ANYTHING").returncode == 0


@pytest.mark.peer
def test_metadata_in_journal_survives_latin1_and_utf8(gateway: GatewayProcess, tmp_path: Path) -> None:
    vet = {
        "PatientSpeciesDescription": "Hund",
        "PatientBreedDescription": "Grönlandshund",
        "ResponsiblePerson": "Åström^Märta",
        "AccessionNumber": "A-17",
    }
    latin1 = secondary_capture(tmp_path / "latin1.dcm", charset="ISO_IR 100", patient_name="Örjan^Ärlig",
                               attributes=vet)
    utf8 = secondary_capture(tmp_path / "utf8.dcm", charset="ISO_IR 192", patient_name="Örjan^Ärlig",
                             attributes=vet)
    assert b"\xd6rjan" in latin1.read_bytes()  # really ISO 8859-1 on the wire
    assert "Örjan".encode() in utf8.read_bytes()  # really UTF-8
    assert storescu(gateway, latin1, utf8, calling="XRAY1").returncode == 0
    rows = gateway.instances()
    assert len(rows) == 2
    for row, path in zip(rows, (latin1, utf8), strict=True):
        sent = pydicom.dcmread(path)
        assert row["patient_name"] == "Örjan^Ärlig"
        assert row["species"] == "Hund"
        assert row["breed"] == "Grönlandshund"
        assert row["responsible_person"] == "Åström^Märta"
        assert row["accession_number"] == "A-17"
        assert row["sop_instance_uid"] == sent.SOPInstanceUID
        assert row["study_instance_uid"] == sent.StudyInstanceUID
        assert row["series_instance_uid"] == sent.SeriesInstanceUID
        assert row["sop_class_uid"] == SecondaryCaptureImageStorage
        assert (row["patient_id"], row["modality"], row["study_date"]) == ("VM-1", "OT", "20261127")
        assert (row["sender"], row["peer_address"]) == ("XRAY1", "127.0.0.1")
        stored = gateway.data_dir / "spool" / row["spool_path"]
        assert row["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
        assert row["spool_path"].endswith(f"/{row['sha256']}.dcm")  # named by what arrived
        assert row["size"] == stored.stat().st_size


@pytest.mark.peer
def test_same_bytes_stored_once_different_bytes_become_a_version(gateway: GatewayProcess, tmp_path: Path) -> None:
    study = generate_uid()
    sop = generate_uid()
    first = secondary_capture(tmp_path / "a.dcm", study_uid=study, sop_uid=sop, patient_name="Fido")
    changed = secondary_capture(tmp_path / "b.dcm", study_uid=study, sop_uid=sop, patient_name="Fido^Corrected")
    assert storescu(gateway, first).returncode == 0
    assert storescu(gateway, first).returncode == 0  # again: still Success, stored once
    assert storescu(gateway, changed).returncode == 0
    rows = gateway.instances()
    assert [(r["sop_instance_uid"], r["version"], r["patient_name"]) for r in rows] == [
        (sop, 1, "Fido"),
        (sop, 2, "Fido^Corrected"),
    ]
    assert len(gateway.spool_files()) == 2
    with gateway.journal() as conn:
        # a new version is not another instance of the study
        assert [tuple(r) for r in conn.execute("SELECT instance_count FROM studies")] == [(1,)]


def _send_raw(port: int, dataset_file: Path, sop_class: str = CTImageStorage) -> int:
    """Send a file's bytes as they are with pynetdicom (dcmtk refuses to send broken files)."""
    ae = AE(ae_title="BROKEN")
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="VM_GATEWAY")
    assert assoc.is_established
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # sends the file's dataset bytes unparsed
    try:
        status = assoc.send_c_store(dataset_file)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
    return int(status.Status)


@pytest.mark.peer
@pytest.mark.parametrize("cut", [100, 5])
def test_truncated_dataset_is_refused_and_leaves_nothing(gateway: GatewayProcess, tmp_path: Path, cut: int) -> None:
    whole = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole[:-cut])
    status = _send_raw(gateway.port, truncated)
    assert 0xC000 <= status <= 0xCFFF
    assert gateway.instances() == []
    assert gateway.spool_files() == []
    assert gateway.incoming_files() == []
    assert any("refused unreadable instance" in line for line in gateway.log_lines)


@pytest.mark.peer
def test_dataset_without_uids_is_refused(gateway: GatewayProcess, tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del ds.SOPInstanceUID
    path = tmp_path / "no_uid.dcm"
    ds.save_as(path)
    assert 0xC000 <= _send_raw(gateway.port, path) <= 0xCFFF
    assert gateway.instances() == []
    assert gateway.spool_files() == []


@pytest.mark.peer
def test_junk_and_http_on_the_port_do_not_disturb_a_transfer(gateway: GatewayProcess, tmp_path: Path) -> None:
    files = copies_of_ct_small(tmp_path / "ct", 40)
    transfer = subprocess.Popen(
        ["storescu", "-nh", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *map(str, files)],
        env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for payload in (os.urandom(4096), b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n", b"\x01\x00\xff\xff\xff\xff"):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as junk:
            junk.sendall(payload)
            junk.shutdown(socket.SHUT_WR)
            # The gateway drops the connection: reading ends (EOF or reset) instead of hanging.
            try:
                while junk.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    output, _ = transfer.communicate(timeout=120)
    assert transfer.returncode == 0, output
    assert len(gateway.instances()) == 40
    assert echoscu(gateway).returncode == 0


@pytest.mark.peer
def test_watermark_refuses_with_out_of_resources(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway(storage={"min_free_mb": 10**9})  # a petabyte: never available
    files = copies_of_ct_small(tmp_path / "ct", 2)
    result = dcmtk("storescu", "-v", "-nh", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files)
    assert result.stdout.count("Received Store Response (Refused: OutOfResources)") == 2, result.stdout
    assert gateway.instances() == []
    assert gateway.spool_files() == []
    assert gateway.incoming_files() == []


@pytest.mark.peer
def test_large_instance_is_streamed_not_held_in_memory(gateway: GatewayProcess, tmp_path: Path) -> None:
    big = secondary_capture(tmp_path / "loop.dcm", frames=256, rows=1024, columns=1024)  # 256 MiB
    assert echoscu(gateway).returncode == 0  # warm up: imports and first association done
    assert gateway.proc is not None
    before = peak_rss_mb(gateway.proc.pid)
    assert storescu(gateway, big).returncode == 0
    growth = peak_rss_mb(gateway.proc.pid) - before
    print(f"peak RSS {before:.0f} MB before, grew by {growth:.1f} MB")
    assert growth < 40, f"peak RSS grew by {growth:.0f} MB for a 256 MB instance"
    [row] = gateway.instances()
    stored = gateway.data_dir / "spool" / row["spool_path"]
    assert row["size"] == stored.stat().st_size > 256 * 2**20
    assert pydicom.dcmread(stored, stop_before_pixels=True).NumberOfFrames == 256


@pytest.mark.peer
def test_associations_beyond_the_limit_are_rejected_transiently(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"max_associations": 1})
    ae = AE(ae_title="FIRST")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    first = ae.associate("127.0.0.1", gateway.port, ae_title="VM_GATEWAY")
    assert first.is_established
    try:
        second = echoscu(gateway)
        assert second.returncode != 0
        assert "Rejected Transient" in second.stdout and "Local Limit Exceeded" in second.stdout
    finally:
        first.release()
    assert echoscu(gateway).returncode == 0


def test_a_taken_port_stops_the_start_with_a_clear_message(gateway: GatewayProcess, make_gateway: Any) -> None:
    second = make_gateway(start=False, dicom={"port": gateway.port})
    result = subprocess.run(
        [sys.executable, "-m", "vmgateway", "run", "--config", str(second.config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot listen for DICOM on 127.0.0.1:{gateway.port}: Address already in use" in result.stderr


@pytest.mark.peer
def test_partial_file_of_an_aborted_association_is_removed(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway(dicom={"network_timeout_s": 1})
    big = secondary_capture(tmp_path / "loop.dcm", frames=128, rows=1024, columns=1024)  # 128 MiB
    sender = subprocess.Popen(["storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), str(big)],
                              env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(2000):  # bounded: until the dataset has started to arrive
            if gateway.incoming_files():
                break
            time.sleep(0.005)
        assert gateway.incoming_files(), "the transfer did not start"
    finally:
        sender.kill()  # the modality dies mid-dataset
        sender.wait(30)
    # the asyncio engine removes it as the connection ends, pynetdicom's by the periodic job
    gateway.wait_for_log("removed unacknowledged partial")
    assert gateway.incoming_files() == []
    assert gateway.instances() == []


@pytest.mark.peer
@pytest.mark.parametrize("engine", ["asyncio", "pynetdicom"])
def test_a_deflated_instance_is_checked_whole_before_success(make_gateway: Any, tmp_path: Path, engine: str) -> None:
    """dcmtk writes and sends Deflated Explicit VR Little Endian; cut short inside its zlib stream,
    the same instance was once acknowledged (the uncompressed cut got 0xC000)."""
    gateway = make_gateway(dicom={"engine": engine})
    [plain] = copies_of_ct_small(tmp_path / "plain", 1)
    deflated = tmp_path / "deflated.dcm"
    assert dcmtk("dcmconv", "+td", plain, deflated).returncode == 0
    sent = dcmtk("storescu", "-xd", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), deflated)
    assert sent.returncode == 0, sent.stdout
    [kept] = gateway.instances()
    assert kept["transfer_syntax_uid"] == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert kept["sop_instance_uid"] == pydicom.dcmread(plain).SOPInstanceUID
    cut = tmp_path / "cut.dcm"
    whole = deflated.read_bytes()
    cut.write_bytes(whole[:len(whole) - len(whole) // 3])  # inside the zlib stream
    refused = send_as_it_is(gateway, cut, pydicom.uid.DeflatedExplicitVRLittleEndian)  # dcmtk sends no broken file
    assert refused.Status == 0xC000 and refused.ErrorComment == "dataset is not whole: its zlib stream is cut short"
    assert len(gateway.instances()) == 1 and gateway.incoming_files() == []
