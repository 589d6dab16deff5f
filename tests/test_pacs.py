"""Polling a PACS that cannot forward: Orthanc as the clinic's PACS, in a private network."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.support.clients import client, new_token, vmgateway
from tests.support.dicomdata import (
    PYDICOM_FILES,
    REFUSED_BY_DCMTK,
    copies_of_ct_small,
    dataset_differences,
    dated_today,
    one_file_per_instance,
)
from tests.support.gateway import GatewayProcess, dcmtk, free_ports
from tests.support.netns import loopback_only
from tests.support.orthanc import Orthanc
from vmgateway.pacs.retrieve import SOP_CLASSES_PER_ASSOCIATION

JPEG_FILES = ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cr.dcm", "JPEG2000.dcm", "SC_rgb_gdcm_KY.dcm",
              "MR_small_jp2klossless.dcm", "JPEG-lossy.dcm", "SC_rgb_rle.dcm", "CT_small.dcm")
"""Compressed and uncompressed instances, each its own study: JPEG, JPEG 2000, RLE, plain."""


@pytest.fixture
def network() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.fixture
def all_ports(network: None) -> list[int]:
    """The gateway's three ports and the PACS's two, chosen together so that none coincide."""
    return free_ports(5)


@pytest.fixture
def ports(all_ports: list[int]) -> tuple[int, int, int]:
    dicom, hl7, api = all_ports[:3]
    return dicom, hl7, api


@pytest.fixture
def pacs_ports(all_ports: list[int]) -> list[int]:
    return all_ports[3:]


@pytest.fixture
def pacs(ports: tuple[int, int, int], pacs_ports: list[int], tmp_path: Path) -> Iterator[Orthanc]:
    archive = Orthanc(tmp_path / "pacs", modalities={"gateway": ["VM_GATEWAY", "127.0.0.1", ports[0]]},
                      ports=pacs_ports).start()
    yield archive
    archive.remove()


def polling(make_gateway: Any, pacs: Orthanc, ports: tuple[int, int, int], **options: Any) -> tuple[GatewayProcess, str]:
    dicom, hl7, api = ports
    gateway: GatewayProcess = make_gateway(
        dicom={"port": dicom}, hl7={"port": hl7}, api={"port": api},
        pacs={"host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": "ORTHANC", "poll": False,
              "interval_s": 3600, "lookback_days": 1, "timeout_s": 10} | options)
    return gateway, new_token(gateway, "vetmanager")


def upload_today(pacs: Orthanc, paths: list[Path], folder: Path) -> list[Path]:
    copies = dated_today(paths, folder)
    pacs.upload_all(copies)
    return copies


def poll(gateway: GatewayProcess, token: str) -> dict[str, Any]:
    with client(gateway, token) as api:
        answer = api.post("/api/v1/pacs/poll", timeout=120)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


def held(gateway: GatewayProcess) -> dict[str, Any]:
    return {row["sop_instance_uid"]: row for row in gateway.instances()}


@pytest.mark.peer
def test_a_poll_brings_everything_over_in_its_original_transfer_syntax(make_gateway: Any, pacs: Orthanc,
                                                                       ports: tuple[int, int, int],
                                                                       tmp_path: Path) -> None:
    files = upload_today(pacs, [PYDICOM_FILES / name for name in JPEG_FILES], tmp_path / "today")
    gateway, token = polling(make_gateway, pacs, ports)
    first = poll(gateway, token)
    assert (first["ok"], first["missing"], first["fetched"]) == (True, len(files), len(files)), first
    rows = held(gateway)
    for path in files:
        sent = pydicom.dcmread(path)
        row = rows[sent.SOPInstanceUID]
        assert row["transfer_syntax_uid"] == sent.file_meta.TransferSyntaxUID, path.name
        stored = pydicom.dcmread(gateway.data_dir / "spool" / row["spool_path"])
        assert stored.PixelData == sent.PixelData, path.name  # the compressed stream as the modality made it
    with gateway.journal() as conn:
        senders = conn.execute("SELECT protocol, name, address, items FROM senders").fetchall()
    assert [tuple(s) for s in senders] == [("pacs", "ORTHANC", "127.0.0.1", len(files))]

    again = poll(gateway, token)  # nothing new: nothing fetched, nothing duplicated
    assert (again["ok"], again["missing"], again["fetched"]) == (True, 0, 0)
    assert len(gateway.instances()) == len(files)
    with client(gateway, token) as api:
        status = api.get("/api/v1/status").json()["components"]["pacs"]
    assert status["state"] == "ok" and status["last_success_at"]


ORTHANC_CANNOT_INDEX = {
    # No Patient ID, Study or Series Instance UID: Orthanc answers "Inexistent tag", so no PACS
    # built on it can hold them (and the gateway could not ask for them by study).
    "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
}


ORTHANC_CANNOT_SEND = "rtdose_rle.dcm"
"""32-bit RLE RT Dose: Orthanc 1.10 fails every C-GET of it ("storeSCU: No presentation context
for: (OT) 31", 0xC000), to dcmtk's getscu as well, whatever contexts are offered."""


@pytest.mark.peer
def test_the_whole_pydicom_set_comes_over_intact_over_several_associations(make_gateway: Any, pacs: Orthanc,
                                                                          ports: tuple[int, int, int],
                                                                          tmp_path: Path) -> None:
    files = dated_today(one_file_per_instance(exclude=REFUSED_BY_DCMTK), tmp_path / "today")
    refused = {path.name for path in files if not pacs.upload(path, check=False)}
    assert refused == ORTHANC_CANNOT_INDEX
    sent = {path.name: pydicom.dcmread(path) for path in files if path.name not in refused}
    assert pacs.instance_count() == len(sent)
    classes = {dataset.SOPClassUID for dataset in sent.values()}
    assert len(classes) > SOP_CLASSES_PER_ASSOCIATION, "more SOP classes than one C-GET association can take"
    gateway, token = polling(make_gateway, pacs, ports)

    first = poll(gateway, token)
    assert (first["missing"], first["fetched"]) == (len(sent), len(sent) - 1), first
    assert not first["ok"] and first["problems"] == ["C-GET status 0xC000"]
    rows = held(gateway)
    for name, original in sent.items():
        if name == ORTHANC_CANNOT_SEND:
            assert original.SOPInstanceUID not in rows
            continue
        stored = pydicom.dcmread(gateway.data_dir / "spool" / rows[original.SOPInstanceUID]["spool_path"])
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, name
        assert dataset_differences(original, stored) == [], name
    with client(gateway, token) as api:
        status = api.get("/api/v1/status").json()["components"]["pacs"]
    assert status["state"] == "partial" and "0xC000" in status["last_error"]

    again = poll(gateway, token)  # the one that failed is asked for again, nothing else
    assert (again["missing"], again["fetched"]) == (1, 0), again
    assert len(gateway.instances()) == len(sent) - 1


@pytest.mark.peer
def test_a_study_that_grows_gets_only_its_new_instances(make_gateway: Any, pacs: Orthanc,
                                                        ports: tuple[int, int, int], tmp_path: Path) -> None:
    study = dated_today(copies_of_ct_small(tmp_path / "ct", 6), tmp_path / "today")
    for path in study[:4]:
        pacs.upload(path)
    gateway, token = polling(make_gateway, pacs, ports)
    assert poll(gateway, token)["fetched"] == 4
    for path in study[4:]:
        pacs.upload(path)
    grown = poll(gateway, token)
    assert (grown["missing"], grown["fetched"]) == (2, 2)
    assert len(gateway.instances()) == 6
    for path in study:
        row = held(gateway)[pydicom.dcmread(path).SOPInstanceUID]
        stored = gateway.data_dir / "spool" / row["spool_path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]


@pytest.mark.peer
def test_an_instance_only_the_pacs_has_is_found_even_when_the_gateway_holds_more_of_the_study(
        make_gateway: Any, pacs: Orthanc, ports: tuple[int, int, int], tmp_path: Path) -> None:
    """The modality sent series 1 to both, and series 2 to the gateway alone; the PACS also has a
    third image of series 1. The gateway holds 4 instances of the study, the PACS 3: comparing
    totals (as the poller once did) hides the third image for good."""
    study = dated_today(copies_of_ct_small(tmp_path / "ct", 5), tmp_path / "today")
    second_series = pydicom.uid.generate_uid()
    for path in study[3:]:
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = second_series
        dataset.save_as(path)
    for path in study[:3]:
        pacs.upload(path)
    gateway, token = polling(make_gateway, pacs, ports)
    sent = dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port),
                 *map(str, study[:2] + study[3:]))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert len(gateway.instances()) == 4

    found = poll(gateway, token)
    assert (found["ok"], found["missing"], found["fetched"]) == (True, 1, 1), found
    only_on_the_pacs = pydicom.dcmread(study[2]).SOPInstanceUID
    row = held(gateway)[only_on_the_pacs]
    stored = pydicom.dcmread(gateway.data_dir / "spool" / row["spool_path"])
    assert dataset_differences(pydicom.dcmread(study[2]), stored) == []
    assert len(gateway.instances()) == 5
    for _ in range(2):  # complete now: nothing asked for again, nothing duplicated
        again = poll(gateway, token)
        assert (again["ok"], again["missing"], again["fetched"]) == (True, 0, 0), again
    assert len(gateway.instances()) == 5


@pytest.mark.peer
def test_c_move_brings_them_to_the_storage_scp(make_gateway: Any, pacs: Orthanc, ports: tuple[int, int, int],
                                               tmp_path: Path) -> None:
    upload_today(pacs, copies_of_ct_small(tmp_path / "ct", 3), tmp_path / "today")
    gateway, token = polling(make_gateway, pacs, ports, retrieve="move")
    moved = poll(gateway, token)
    assert moved["ok"] and moved["missing"] == 3, moved
    assert len(gateway.instances()) == 3


@pytest.mark.peer
def test_a_pacs_that_does_not_know_us_says_to_register_the_gateway(make_gateway: Any, ports: tuple[int, int, int],
                                                                   pacs_ports: list[int], tmp_path: Path) -> None:
    stranger = Orthanc(tmp_path / "pacs", modalities={"other": ["OTHER", "127.0.0.1", 104]}, ports=pacs_ports).start()
    try:
        upload_today(stranger, copies_of_ct_small(tmp_path / "ct", 1), tmp_path / "today")
        gateway, token = polling(make_gateway, stranger, ports, retrieve="move")
        refused = poll(gateway, token)
        assert not refused["ok"]
        text = refused.get("error") or "; ".join(refused.get("problems", []))
        assert "VM_GATEWAY" in text and "regist" in text, refused
        assert gateway.instances() == []
    finally:
        stranger.remove()


@pytest.mark.peer
def test_a_pacs_that_is_down_shows_in_status_and_is_fetched_from_when_back(make_gateway: Any, pacs: Orthanc,
                                                                          ports: tuple[int, int, int],
                                                                          tmp_path: Path) -> None:
    upload_today(pacs, copies_of_ct_small(tmp_path / "ct", 2), tmp_path / "today")
    pacs.stop()
    gateway, token = polling(make_gateway, pacs, ports)
    down = poll(gateway, token)
    assert not down["ok"] and "PACS" in down["error"]
    with client(gateway, token) as api:
        status = api.get("/api/v1/status").json()["components"]["pacs"]
        assert status["state"] == "failing" and status["last_error"] == down["error"]
        assert api.get("/api/v1/health").status_code == 200  # nothing else disturbed
    pacs.start()
    back = poll(gateway, token)
    assert back["ok"] and back["fetched"] == 2


@pytest.mark.peer
def test_c_move_to_a_pacs_that_has_the_gateway_at_a_wrong_port_says_what_to_do(
        make_gateway: Any, ports: tuple[int, int, int], pacs_ports: list[int], tmp_path: Path) -> None:
    nobody = 9  # the discard port: nothing listens there in this namespace
    wrong = Orthanc(tmp_path / "pacs", modalities={"gateway": ["VM_GATEWAY", "127.0.0.1", nobody]},
                    ports=pacs_ports).start()
    try:
        upload_today(wrong, copies_of_ct_small(tmp_path / "ct", 1), tmp_path / "today")
        gateway, token = polling(make_gateway, wrong, ports, retrieve="move")
        refused = poll(gateway, token)
        assert not refused["ok"] and gateway.instances() == [], refused
        text = refused.get("error") or "; ".join(refused["problems"])
        assert "register the gateway" in text and "VM_GATEWAY" in text and "port 4006" in text, refused
    finally:
        wrong.remove()


@pytest.mark.peer
def test_kill_9_during_a_c_get_then_the_next_poll_completes_the_study_once(
        make_gateway: Any, pacs: Orthanc, ports: tuple[int, int, int], tmp_path: Path) -> None:
    study = upload_today(pacs, copies_of_ct_small(tmp_path / "ct", 200), tmp_path / "today")
    gateway, token = polling(make_gateway, pacs, ports)
    asking = threading.Thread(target=lambda: _poll_ignoring_the_kill(gateway, token))
    asking.start()
    deadline = time.monotonic() + 60  # no event tells of each fetched instance: watch the journal
    while len(gateway.instances()) < 30:
        assert time.monotonic() < deadline, "the C-GET did not get under way"
        time.sleep(0.01)
    gateway.kill()
    asking.join(60)
    before = len(gateway.instances())
    assert 30 <= before < 200, "the kill did not land in the middle of the C-GET"

    gateway.start()
    completed = poll(gateway, token)
    assert (completed["ok"], completed["missing"], completed["fetched"]) == (True, 200 - before, 200 - before)
    rows = gateway.instances()
    assert len(rows) == 200 and len({r["sop_instance_uid"] for r in rows}) == 200  # none twice
    assert {r["sop_instance_uid"] for r in rows} == {pydicom.dcmread(p).SOPInstanceUID for p in study}


def _poll_ignoring_the_kill(gateway: GatewayProcess, token: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        poll(gateway, token)


@pytest.mark.peer
def test_pacs_find_lists_what_the_pacs_has_beside_what_is_held(make_gateway: Any, pacs: Orthanc,
                                                               ports: tuple[int, int, int], tmp_path: Path) -> None:
    study = upload_today(pacs, copies_of_ct_small(tmp_path / "ct", 3), tmp_path / "today")
    gateway, token = polling(make_gateway, pacs, ports)
    listing = vmgateway("pacs", "find", "--config", str(gateway.config))
    assert listing.returncode == 0, listing.stderr
    study_uid = pydicom.dcmread(study[0]).StudyInstanceUID
    (line,) = [line for line in listing.stdout.splitlines() if study_uid in line]
    assert "3 on PACS     0 here" in line and "1 study on ORTHANC@127.0.0.1" in listing.stderr
    poll(gateway, token)
    polled = vmgateway("pacs", "poll-now", "--config", str(gateway.config), "--token", token, "--json")
    assert polled.returncode == 0 and json.loads(polled.stdout)["fetched"] == 0  # all held already
    said = vmgateway("pacs", "poll-now", "--config", str(gateway.config), "--token", token)
    assert said.stdout.startswith("1 study on the PACS in the last") and "0 instances missing here, 0 fetched" in said.stdout
    assert "3 on PACS     3 here" in vmgateway("pacs", "find", "--config", str(gateway.config)).stdout


@pytest.mark.peer
def test_the_poll_timer_fetches_new_studies_and_backs_off_while_the_pacs_is_down(
        make_gateway: Any, pacs: Orthanc, ports: tuple[int, int, int], tmp_path: Path) -> None:
    interval = 5  # the shortest pacs.interval_s allowed
    upload_today(pacs, copies_of_ct_small(tmp_path / "first", 2), tmp_path / "today1")
    gateway, token = polling(make_gateway, pacs, ports, poll=True, interval_s=interval)
    gateway.wait_for_log('"pacs polled"')  # the first poll comes at start
    assert len(gateway.instances()) == 2

    later = upload_today(pacs, copies_of_ct_small(tmp_path / "later", 3), tmp_path / "today2")
    mark = len(gateway.log_lines)
    fetched = json.loads(gateway.wait_for_log('"pacs polled"', timeout=interval * 3, after=mark))
    assert fetched["fetched"] == 3 and len(gateway.instances()) == 5  # within one interval, unasked

    pacs.stop()
    mark = len(gateway.log_lines)
    gateway.wait_until(lambda lines: sum('"pacs poll failed"' in line for line in lines[mark:]) >= 2,
                       "two failed polls", timeout=interval * 5)
    with client(gateway, token) as api:
        status = api.get("/api/v1/status").json()["components"]["pacs"]
    assert status["state"] == "failing" and status["failures_in_a_row"] >= 2
    waits = status["next_poll_at"] - status["last_poll_at"]
    assert waits >= interval * 2 ** (status["failures_in_a_row"] - 1), status  # backing off, not hammering
    pacs.start()
    with client(gateway, token) as api:  # no need to wait out the backoff: poll-now is served at once
        assert api.post("/api/v1/pacs/poll", timeout=60).json()["ok"]
        assert api.get("/api/v1/status").json()["components"]["pacs"]["failures_in_a_row"] == 0
    assert {pydicom.dcmread(p).SOPInstanceUID for p in later} <= held(gateway).keys()


def test_modalities_in_study_read_as_dicom_writes_them() -> None:
    from pydicom.multival import MultiValue

    from vmgateway.pacs.query import _modalities

    assert _modalities("CT") == "CT"  # one value: a plain string, not C\T
    assert _modalities(MultiValue(str, ["CT", "SR"])) == "CT\\SR"
    assert _modalities("") == _modalities(None) == ""


def test_a_drained_poller_starts_no_new_poll_and_returns() -> None:
    """A drain lets a poll under way finish and starts none after it (the poller once went on
    polling for the whole power drain)."""
    from vmgateway.config import Settings
    from vmgateway.pacs.poller import STOPPING, PacsPoller

    async def scenario() -> None:
        poller = PacsPoller(Settings(), store=None)  # type: ignore[arg-type]  # no PACS: the store is never asked
        running = asyncio.create_task(poller.run())
        answer = await asyncio.wait_for(poller.poll_now(), 10)
        assert answer == {"ok": False, "error": "no PACS configured (pacs.host, pacs.ae_title)"}
        polled_at = poller.state["last_poll_at"]
        poller.stop_starting()
        await asyncio.wait_for(running, 5)
        assert await poller.poll_now() == STOPPING
        assert poller.state["last_poll_at"] == polled_at and poller.state["state"] == "off"

    asyncio.run(scenario())
