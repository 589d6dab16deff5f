"""Push transfers into a real archive: Orthanc with its DICOMweb plugin, in a private network."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.clients import client, new_token
from tests.support.dicomdata import (
    PYDICOM_FILES,
    REFUSED_BY_DCMTK,
    copies_of_ct_small,
    one_file_per_instance,
    secondary_capture,
)
from tests.support.gateway import GatewayProcess, dcmtk
from tests.support.netns import loopback_only
from tests.support.orthanc import Orthanc
from tests.support.push import dead_count, delivered_count, journal_states, wait_delivered
from tests.support.storescu import storescu_acknowledged

FAST_RETRIES = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}


@pytest.fixture
def network() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.fixture
def orthanc(network: None, tmp_path: Path) -> Iterator[Orthanc]:
    archive = Orthanc(tmp_path / "orthanc").start()
    yield archive
    archive.remove()


def pushing(make_gateway: Any, orthanc: Orthanc, **transfers: Any) -> tuple[GatewayProcess, str]:
    """A gateway in push mode towards `orthanc`, transfers switched on; and an API token."""
    gateway: GatewayProcess = make_gateway(transfers={
        "mode": "push", "dicomweb_url": orthanc.dicomweb_url, "allow_plain_http": True, **FAST_RETRIES} | transfers)
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
    return gateway, token


def assert_identical_in_orthanc(gateway: GatewayProcess, orthanc: Orthanc) -> int:
    rows = gateway.instances()
    for row in rows:
        stored = (gateway.data_dir / "spool" / row["spool_path"]).read_bytes()
        assert orthanc.file_of(row["sop_instance_uid"]) == stored, row["sop_instance_uid"]
    return len(rows)


ORTHANC_STOW_REFUSES = {
    # Orthanc 1.10's DICOMweb plugin logs "STOW-RS: Missing a mandatory tag in incoming DICOM
    # file" for these: JPEG-LS near-lossless ones get a Failed SOP Sequence entry (0xC000); the
    # RLE RT Dose it cannot even name, so it is absent from the answer (which is still HTTP 400).
    "JPEGLSNearLossless_08.dcm": "STOW-RS failure reason 0xC000 (HTTP 400)",
    "JPEGLSNearLossless_16.dcm": "STOW-RS failure reason 0xC000 (HTTP 400)",
    "SC_rgb_jls_lossy_line.dcm": "STOW-RS failure reason 0xC000 (HTTP 400)",
    "SC_rgb_jls_lossy_sample.dcm": "STOW-RS failure reason 0xC000 (HTTP 400)",
    "rtdose_rle.dcm": "not in the STOW-RS answer (HTTP 400)",
}


@pytest.mark.peer
def test_everything_received_arrives_in_orthanc_byte_for_byte(make_gateway: Any, orthanc: Orthanc) -> None:
    gateway, token = pushing(make_gateway, orthanc, max_attempts=1)
    files = one_file_per_instance(exclude=REFUSED_BY_DCMTK)
    sent = dcmtk("dcmsend", "-dn", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files)
    assert sent.returncode == 0, sent.stdout[-2000:]
    rows = gateway.instances()
    compressed = {row["transfer_syntax_uid"] for row in rows} & {
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"}
    assert len(compressed) == 4, "the set holds JPEG, JPEG Lossless, JPEG 2000 and RLE instances"
    refused = {pydicom.dcmread(PYDICOM_FILES / name, stop_before_pixels=True).SOPInstanceUID: error
               for name, error in ORTHANC_STOW_REFUSES.items()}
    doomed = {row["item_id"]: refused[row["sop_instance_uid"]] for row in rows if row["sop_instance_uid"] in refused}
    assert len(doomed) == len(refused)
    wait_delivered(gateway, len(rows) - len(doomed))
    gateway.wait_until(lambda lines: dead_count(lines) == len(doomed), "refusals")
    with gateway.journal() as conn:
        states = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, state, last_error FROM items")}
    for row in rows:
        state, error = states[row["item_id"]]
        if row["item_id"] in doomed:
            assert (state, error) == ("dead", doomed[row["item_id"]]), row["sop_instance_uid"]
        else:
            assert state == "delivered", (row["sop_instance_uid"], error)
            stored = (gateway.data_dir / "spool" / row["spool_path"]).read_bytes()
            assert orthanc.file_of(row["sop_instance_uid"]) == stored, row["sop_instance_uid"]
    assert orthanc.instance_count() == len(rows) - len(doomed)
    with client(gateway, token) as api:
        transfers = api.get("/api/v1/transfers").json()
        metrics = api.get("/api/v1/metrics").text
    assert transfers["destinations"]["dicomweb"]["state"] == "ok" and transfers["waiting"] == 0
    assert transfers["dead"] == len(doomed)
    delivered = float(len(rows) - len(doomed))
    assert f'vmgateway_deliveries_total{{destination="dicomweb",outcome="delivered"}} {delivered}' in metrics
    assert gateway.stop() == 0


@pytest.mark.peer
def test_nothing_moves_while_transfers_are_off(make_gateway: Any, orthanc: Orthanc, tmp_path: Path) -> None:
    gateway, token = pushing(make_gateway, orthanc)
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/deactivate").status_code == 200
    files = copies_of_ct_small(tmp_path / "ct", 3)
    assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files).returncode == 0
    with client(gateway, token) as api:
        assert api.get("/api/v1/transfers").json()["waiting"] == 3
        assert api.post("/api/v1/transfers/activate").status_code == 200
    wait_delivered(gateway, 3)
    assert orthanc.instance_count() == 3


def received_while_off(make_gateway: Any, orthanc: Orthanc, tmp_path: Path, count: int,
                       **transfers: Any) -> tuple[GatewayProcess, str]:
    """A pushing gateway that has received `count` instances with transfers off (so that the
    test, not the race between receiving and sending, decides when delivery begins)."""
    gateway, token = pushing(make_gateway, orthanc, **transfers)
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/deactivate").status_code == 200
    files = copies_of_ct_small(tmp_path / "ct", count)
    assert len(storescu_acknowledged(gateway, files, after=1, on_ack=lambda: None)) == count
    return gateway, token


def when_delivered(count: int, action: Callable[[], object]) -> Callable[[list[str]], bool]:
    """A log condition that runs `action` the moment `count` items are delivered."""
    def condition(lines: list[str]) -> bool:
        if delivered_count(lines) >= count:
            action()
            return True
        return False
    return condition


@pytest.mark.peer
def test_orthanc_killed_mid_transfer_and_restarted_gets_each_instance_once(make_gateway: Any, orthanc: Orthanc,
                                                                          tmp_path: Path) -> None:
    gateway, token = received_while_off(make_gateway, orthanc, tmp_path, 150, batch_max_instances=2, concurrency=1)
    assert orthanc.proc is not None
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
    gateway.wait_until(when_delivered(10, orthanc.proc.kill), "the first deliveries")
    gateway.wait_until(lambda lines: any('"msg": "upstream unavailable"' in line for line in lines),
                       "the outage noticed")
    with client(gateway, token) as api:
        during = api.get("/api/v1/transfers").json()
    assert during["state"] == "attention" and during["destinations"]["dicomweb"]["last_error"]
    assert 0 < during["waiting"] < 150
    orthanc.stop()
    orthanc.start()  # same storage: what it had is still there
    wait_delivered(gateway, 150)
    assert journal_states(gateway) == {"delivered": 150}
    assert orthanc.instance_count() == 150
    assert assert_identical_in_orthanc(gateway, orthanc) == 150


@pytest.mark.peer
def test_kill_9_during_delivery_loses_nothing(make_gateway: Any, orthanc: Orthanc, tmp_path: Path) -> None:
    gateway, token = received_while_off(make_gateway, orthanc, tmp_path, 150, batch_max_instances=2, concurrency=1)
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
    gateway.wait_until(when_delivered(30, gateway.kill), "deliveries under way")
    before = journal_states(gateway).get("delivered", 0)
    assert 30 <= before < 150, "the kill did not land in the middle of the deliveries"
    seen = len(gateway.log_lines)
    gateway.start()
    wait_delivered(gateway, 150 - before, after=seen)
    assert journal_states(gateway) == {"delivered": 150}
    assert orthanc.instance_count() == 150  # resent ones are recognised by SOP Instance UID
    assert assert_identical_in_orthanc(gateway, orthanc) == 150


@pytest.mark.peer
def test_a_refused_instance_dies_alone_is_listed_and_can_be_retried(make_gateway: Any, orthanc: Orthanc,
                                                                   tmp_path: Path) -> None:
    gateway, token = pushing(make_gateway, orthanc, max_attempts=2)
    study = pydicom.uid.generate_uid()
    good = [secondary_capture(tmp_path / f"good{n}.dcm", study_uid=study) for n in range(4)]
    poison = pydicom.dcmread(PYDICOM_FILES / "JPEGLSNearLossless_08.dcm")  # Orthanc's STOW-RS refuses it
    poison.StudyInstanceUID = study  # in the middle of the same study, so in the same batch
    poison.SOPInstanceUID = poison.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    poison.save_as(tmp_path / "poison.dcm")
    files = [*good[:2], tmp_path / "poison.dcm", *good[2:]]
    assert dcmtk("dcmsend", "-dn", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files).returncode == 0
    wait_delivered(gateway, 4)
    gateway.wait_until(lambda lines: any('"items dead: kept, retry through the API"' in line for line in lines),
                       "the poisonous instance given up on")
    assert journal_states(gateway) == {"delivered": 4, "dead": 1}
    assert orthanc.instance_count() == 4
    with client(gateway, token) as api:
        dead = api.get("/api/v1/transfers/dead").json()["items"]
        assert [d["sop_instance_uid"] for d in dead] == [poison.SOPInstanceUID]
        assert dead[0]["attempts"] == 2 and "STOW-RS failure" in dead[0]["last_error"]
        assert api.get("/api/v1/status").json()["components"]["transfers"]["state"] == "attention"
        assert 'vmgateway_items{state="dead"} 1.0' in api.get("/api/v1/metrics").text
        seen = len(gateway.log_lines)
        assert api.post("/api/v1/transfers/retry", json={}).json() == {"retried": [dead[0]["id"]]}
    gateway.wait_for_log('"items dead: kept, retry through the API"', after=seen)  # still refused: dead again
    assert journal_states(gateway) == {"delivered": 4, "dead": 1}
    with gateway.journal() as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE kind = 'dead'").fetchone()[0] == 2


@pytest.mark.peer
def test_large_items_wait_for_their_window_and_a_paced_upload_leaves_room_for_results(
        make_gateway: Any, orthanc: Orthanc, tmp_path: Path) -> None:
    """A slow clinic uplink: large instances only in their window (small ones go at once, status
    says until when); a paced DICOM upload never faster than transfers.max_upload_kbit_s, and a lab
    result posted during it gets through before it ends."""
    from tests.support.push import send
    from tests.support.upstream import Upstream

    later = datetime.datetime.now() + datetime.timedelta(hours=2)
    closed = f"{later:%H:%M}-{later + datetime.timedelta(hours=1):%H:%M}"
    large = secondary_capture(tmp_path / "loop.dcm", frames=6, rows=1024, columns=1024)  # 6 MiB: 3 s paced
    small = secondary_capture(tmp_path / "small.dcm")
    with Upstream() as results:
        gateway, token = pushing(make_gateway, orthanc, hl7_url=results.url, large_item_mb=5,
                                 large_items_window=closed, max_upload_kbit_s=16000)  # 2 MB/s
        assert dcmtk("storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), large, small).returncode == 0
        wait_delivered(gateway, 1)
        assert journal_states(gateway) == {"received": 1, "delivered": 1}  # the small one went, the loop waits
        with client(gateway, token) as api:
            held = api.get("/api/v1/transfers").json()["destinations"]["dicomweb"]["large_items_held_until"]
        assert held == pytest.approx(later.replace(second=0, microsecond=0).timestamp(), abs=1)

        assert gateway.stop() == 0
        gateway.config.write_text(gateway.config.read_text().replace(f'large_items_window = "{closed}"',
                                                                     'large_items_window = ""'))
        mark = len(gateway.log_lines)
        began = time.monotonic()
        gateway.start()  # the window is open now: the loop goes, paced
        send(gateway, "DURING-UPLOAD-1")
        [result] = results.wait_for(1)
        loop_uid = pydicom.dcmread(large, stop_before_pixels=True).SOPInstanceUID
        states = {row["sop_instance_uid"]: row["state"] for row in gateway.instances()}
        assert states[loop_uid] == "received", "the result got through while the loop was still uploading"
        gateway.wait_until(lambda lines: any('"msg": "delivered"' in line and '"destination": "dicomweb"' in line
                                             for line in lines[mark:]), "the loop delivered")
        took = time.monotonic() - began
    size = large.stat().st_size
    rate = 16000 * 1000 / 8
    assert took >= (size - rate * 0.25) / rate, f"{size} bytes in {took:.1f} s: not paced"
    assert result.at - began < took
    assert orthanc.instance_count() == 2
