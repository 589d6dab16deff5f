"""The Modality Worklist: entries from Vetmanager through the API, served to dcmtk's `findscu -W`
as the modality, with dcmtk's own worklist server `wlmscpfs` (fed the same entries) as the
reference; and images sent with an entry's accession number come out linked to its order."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from tests.support.clients import client, new_token
from tests.support.dicomdata import secondary_capture
from tests.support.gateway import DCMTK_ENV, GatewayProcess, dcmtk, free_port, stop_process
from tests.support.upstream import Upstream
from vmgateway.worklist.entry import WorklistEntry, worklist_item

TODAY = datetime.date.today()
TOMORROW = TODAY + datetime.timedelta(days=1)


def entry(order_id: str, accession: str, animal: str, owner: str, modality: str, station: str,
          when: datetime.datetime, **animal_fields: Any) -> dict[str, Any]:
    family, _, given = owner.partition("^")
    return {
        "order_id": order_id, "accession_number": accession, "requested_procedure_id": f"RP{accession}",
        "requested_procedure_description": "Thorax två projektioner", "modality": modality, "station_ae": station,
        "scheduled_at": when.isoformat(), "referring_vet": {"family_name": "Lind", "given_name": "Eva"},
        "animal": {"name": animal, "patient_id": f"VM-{order_id}", **animal_fields},
        "owner": {"family_name": family, "given_name": given},
    }


ENTRIES = [
    entry("O-1", "ACC1", "Fido", "Berg^Anna", "DX", "XRAY1", datetime.datetime.combine(TODAY, datetime.time(9, 30)),
          species="Hund", species_code={"value": "448771007", "meaning": "Canis lupus subsp. familiaris"},
          breed="Labrador", sex="M", neutered="ALTERED", birth_date="2019-04-01"),
    entry("O-2", "ACC2", "Måns", "Åkesson^Örjan", "US", "US_ROOM2",
          datetime.datetime.combine(TODAY, datetime.time(14, 0)), species="Katt", breed="Norsk skogkatt", sex="F",
          neutered="UNALTERED"),
    entry("O-3", "ACC3", "Fia", "Berggren^Lars", "DX", "XRAY1",
          datetime.datetime.combine(TOMORROW, datetime.time(8, 15)), species="Häst", sex="F"),
]


@pytest.fixture
def scheduled(gateway: GatewayProcess) -> tuple[GatewayProcess, str, list[dict[str, Any]]]:
    token = new_token(gateway, "vetmanager")
    made = []
    with client(gateway, token) as api:
        for body in ENTRIES:
            answer = api.post("/api/v1/worklist", json=body)
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["entry"])
    return gateway, token, made


@pytest.fixture
def reference(scheduled: tuple[GatewayProcess, str, list[dict[str, Any]]], tmp_path: Path) -> Iterator[int]:
    """wlmscpfs serving the same entries (as the gateway made them: Study Instance UIDs included)."""
    folder = tmp_path / "wlm" / "WLMSCP"
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    for number, made in enumerate(scheduled[2]):
        item = worklist_item(WorklistEntry.model_validate(made), "ISO_IR 100")
        item.file_meta = FileMetaDataset()
        item.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        item.save_as(folder / f"entry{number}.wl", enforce_file_format=False)
    port = free_port()
    server = subprocess.Popen(["wlmscpfs", "-dfp", str(tmp_path / "wlm"), str(port)], env=DCMTK_ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while dcmtk("echoscu", "-aec", "WLMSCP", "127.0.0.1", str(port)).returncode != 0:  # it announces nothing
        assert time.monotonic() < deadline and server.poll() is None, "wlmscpfs did not start"
        time.sleep(0.05)
    yield port
    stop_process(server)


def find(port: int, called: str, keys: list[str], folder: Path) -> list[pydicom.Dataset]:
    """findscu -W with these keys; the answers, parsed."""
    folder.mkdir(parents=True)
    # Keys go in as bytes in the character set the query declares (ISO_IR 100: Latin-1), as a
    # modality's console would send them; findscu copies them as they are.
    charset = "latin-1" if "SpecificCharacterSet=ISO_IR 100" in keys else "ascii"
    done = subprocess.run([b"findscu", b"-W", b"-X", b"-od", str(folder).encode(), b"-aec", called.encode(),
                           b"127.0.0.1", str(port).encode(), *[arg for key in keys for arg in (b"-k",
                                                                                             key.encode(charset))]],
                          env=DCMTK_ENV, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


VETERINARY = {"PatientSpeciesDescription", "PatientSpeciesCodeSequence", "PatientBreedDescription",
              "PatientBreedCodeSequence", "PatientSexNeutered"}
"""Return keys dcmtk 3.6.7's wlmscpfs does not support (it leaves them out of every answer)."""


NOT_IN_WLMSCPFS = VETERINARY | {"ScheduledProcedureStepDescription"}


def comparable(dataset: pydicom.Dataset, nested: bool = False) -> dict[str, Any]:
    """The answer as wlmscpfs could give it: without Specific Character Set (which it leaves out
    unless asked) and the keys it does not know; inside sequence items without empty values
    (asked for a whole sequence, it lists every key it knows, empty where the entry has none)."""
    return {element.keyword: [comparable(item, nested=True) for item in element.value] if element.VR == "SQ"
            else str(element.value) for element in dataset
            if element.keyword != "SpecificCharacterSet" and element.keyword not in NOT_IN_WLMSCPFS
            and not (nested and element.VR != "SQ" and element.is_empty)}


STEP = "ScheduledProcedureStepSequence"
QUERIES = {
    "modality": [f"{STEP}[0].Modality=DX", "PatientName", "AccessionNumber"],
    "station AE": [f"{STEP}[0].ScheduledStationAETitle=US_ROOM2", "PatientName", "PatientID"],
    "today": [f"{STEP}[0].ScheduledProcedureStepStartDate={TODAY:%Y%m%d}", f"{STEP}[0].Modality",
              "AccessionNumber"],
    "date range": [f"{STEP}[0].ScheduledProcedureStepStartDate={TODAY:%Y%m%d}-{TOMORROW:%Y%m%d}",
                   "AccessionNumber"],
    "open range from tomorrow": [f"{STEP}[0].ScheduledProcedureStepStartDate={TOMORROW:%Y%m%d}-",
                                 "AccessionNumber"],
    "time range": [f"{STEP}[0].ScheduledProcedureStepStartTime=0800-1000", "AccessionNumber"],
    "name wildcard": ["PatientName=Berg*", "PatientID"],
    "name with ?": ["PatientName=*^Fi?", "AccessionNumber"],
    "swedish name": ["SpecificCharacterSet=ISO_IR 100", "PatientName=Åkesson*", "ResponsiblePerson",
                     "PatientSpeciesDescription", "PatientBreedDescription"],
    "patient id": ["PatientID=VM-O-3", "PatientName", "PatientBirthDate", "PatientSex"],
    "accession": ["AccessionNumber=ACC1", "PatientSpeciesDescription", "PatientSexNeutered",
                  "ResponsiblePerson", "ResponsiblePersonRole", "PlacerOrderNumberImagingServiceRequest",
                  "StudyInstanceUID"],
    "empty return keys": ["PatientName", "PatientID", "AccessionNumber", "ReferringPhysicianName",
                          "RequestedProcedureDescription", STEP],
    "no match": ["AccessionNumber=NOPE", "PatientName"],
}


@pytest.mark.peer
@pytest.mark.parametrize("name", QUERIES)
def test_the_gateway_answers_as_wlmscpfs_does(scheduled: tuple[GatewayProcess, str, list[dict[str, Any]]],
                                              reference: int, tmp_path: Path, name: str) -> None:
    gateway = scheduled[0]
    ours = find(gateway.port, gateway.ae_title, QUERIES[name], tmp_path / "ours")
    theirs = find(reference, "WLMSCP", QUERIES[name], tmp_path / "theirs")
    key = lambda answer: str(sorted(answer.items()))  # noqa: E731 (a sort key)
    assert sorted(map(comparable, ours), key=key) == sorted(map(comparable, theirs), key=key)
    if name != "no match":
        assert ours, "the query was meant to match something"
    asked = {query.split("=")[0].split(".")[-1] for query in QUERIES[name]}
    for answer in ours:  # what the reference cannot say, ours must
        assert {keyword for keyword in asked & VETERINARY if keyword in answer} == asked & VETERINARY
        assert answer.SpecificCharacterSet == "ISO_IR 100"


@pytest.mark.peer
def test_veterinary_attributes_and_nested_sequences(scheduled: tuple[GatewayProcess, str, list[dict[str, Any]]],
                                                    tmp_path: Path) -> None:
    gateway = scheduled[0]
    (fido,) = find(gateway.port, gateway.ae_title, [
        "AccessionNumber=ACC1", "PatientSpeciesDescription", "PatientSpeciesCodeSequence", "PatientBreedDescription",
        "PatientSexNeutered", "PatientSex", "PatientBirthDate", "ResponsiblePerson", "ResponsiblePersonRole",
        f"{STEP}[0].Modality", f"{STEP}[0].ScheduledStationAETitle", f"{STEP}[0].ScheduledProcedureStepStartDate",
        "ReferringPhysicianName"], tmp_path / "fido")
    assert (fido.PatientSpeciesDescription, fido.PatientBreedDescription, fido.PatientSexNeutered) == (
        "Hund", "Labrador", "ALTERED")
    (code,) = fido.PatientSpeciesCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "448771007", "SCT", "Canis lupus subsp. familiaris")
    assert (fido.ResponsiblePerson, fido.ResponsiblePersonRole, fido.ReferringPhysicianName) == (
        "Berg^Anna", "OWNER", "Lind^Eva")
    assert (fido.PatientSex, fido.PatientBirthDate) == ("M", "20190401")
    (step,) = fido.ScheduledProcedureStepSequence
    assert set(step.dir()) == {"Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate"}
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate) == (
        "DX", "XRAY1", f"{TODAY:%Y%m%d}")


@pytest.mark.peer
def test_names_match_whatever_their_case(scheduled: tuple[GatewayProcess, str, list[dict[str, Any]]],
                                         reference: int, tmp_path: Path) -> None:
    """PS3.4 C.2.2.2.1 lets an SCP match person names case-insensitively; the gateway does (a nurse
    typing "berg" means Berg), wlmscpfs does not."""
    gateway = scheduled[0]
    ours = find(gateway.port, gateway.ae_title, ["PatientName=berg*", "AccessionNumber"], tmp_path / "ours")
    assert sorted(answer.AccessionNumber for answer in ours) == ["ACC1", "ACC3"]
    assert find(reference, "WLMSCP", ["PatientName=berg*", "AccessionNumber"], tmp_path / "theirs") == []


@pytest.mark.peer
def test_utf8_worklist_and_cancelled_or_performed_entries_leave_it(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway(dicom={"worklist_charset": "ISO_IR 192"})
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        for body in ENTRIES:
            assert api.post("/api/v1/worklist", json=body).status_code == 201
        assert api.post("/api/v1/worklist", json=ENTRIES[0]).status_code == 409
        assert api.delete("/api/v1/worklist/O-3").json() == {"order_id": "O-3", "state": "cancelled"}
        assert api.delete("/api/v1/worklist/NOPE").status_code == 404
    answers = find(gateway.port, gateway.ae_title, ["PatientName", "AccessionNumber"], tmp_path / "utf8")
    assert sorted((a.AccessionNumber, str(a.PatientName), a.SpecificCharacterSet) for a in answers) == [
        ("ACC1", "Berg^Fido", "ISO_IR 192"), ("ACC2", "Åkesson^Måns", "ISO_IR 192")]

    # An image with ACC1's accession number: linked to order O-1, which leaves the worklist as performed.
    image = secondary_capture(tmp_path / "fido.dcm", attributes={"AccessionNumber": "ACC1"})
    sent = dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), str(image))
    assert sent.returncode == 0, sent.stdout
    with client(gateway, token) as api:
        performed = api.get("/api/v1/worklist/O-1").json()
        assert (performed["state"], performed["linked_items"]) == ("performed", 1)
        api.post("/api/v1/transfers/activate")
        (item,) = api.get("/api/v1/feed", params={"after": 0}).json()["items"]
        assert item["dicom"]["order_id"] == "O-1"
        assert [e["order_id"] for e in api.get("/api/v1/worklist", params={"state": "scheduled"}).json()] == ["O-2"]
    left = find(gateway.port, gateway.ae_title, ["AccessionNumber"], tmp_path / "left")
    assert [a.AccessionNumber for a in left] == ["ACC2"]


def test_a_wrong_entry_is_refused_naming_the_field(gateway: GatewayProcess) -> None:
    token = new_token(gateway, "vetmanager")
    wrong = ENTRIES[0] | {"accession_number": "A" * 17, "modality": "dx"}
    with client(gateway, token) as api:
        refused = api.post("/api/v1/worklist", json=wrong)
        assert refused.status_code == 422
        fields = {tuple(error["loc"][1:]) for error in refused.json()["detail"]}
        assert fields == {("accession_number",), ("modality",)}
        changed = api.put("/api/v1/worklist/O-9", json=ENTRIES[0])
        assert changed.status_code == 409 and "is not 'O-9'" in changed.text


@pytest.mark.peer
def test_pushed_instances_carry_their_order(make_gateway: Any, tmp_path: Path) -> None:
    with Upstream() as upstream:  # only the request matters here, not the archive's answer
        gateway = make_gateway(transfers={"mode": "push", "dicomweb_url": upstream.url.removesuffix("/hl7"),
                                          "allow_plain_http": True, "max_attempts": 1})
        token = new_token(gateway, "vetmanager")
        with client(gateway, token) as api:
            assert api.post("/api/v1/worklist", json=ENTRIES[1]).status_code == 201
            api.post("/api/v1/transfers/activate")
        image = secondary_capture(tmp_path / "mans.dcm", attributes={"AccessionNumber": "ACC2"})
        assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), str(image)).returncode == 0
        (request,) = upstream.wait_for(1)
    assert request.path == "/studies" and request.headers["X-Vmgateway-Order-Ids"] == "O-2"


def test_expired_entries_leave_the_journal_unless_images_were_linked(tmp_path: Path) -> None:
    from vmgateway.store.journal import connect
    from vmgateway.store.schema import migrate
    from vmgateway.store.worklist import forget_expired, link_to_order, put_entry, scheduled_entries

    conn = connect(tmp_path / "journal.sqlite")
    migrate(conn)
    now = time.time()
    for order, expires in (("OLD", now - 1), ("OLD-LINKED", now - 1), ("NEW", now + 3600)):
        assert put_entry(order, f"A-{order}", "", "2026-11-27T09:00:00", "{}", now, expires, create=True)(conn)
    conn.execute("INSERT INTO items (id, kind, received_at, sender, peer_address, size, sha256)"
                 " VALUES (1, 'dicom', 0, 'X', '127.0.0.1', 1, 'x')")
    assert link_to_order(conn, 1, "A-OLD-LINKED", None, now) == "OLD-LINKED"
    assert scheduled_entries(conn, now) == ["{}"]  # NEW only: the expired are off the worklist already
    assert forget_expired(now)(conn) == 1
    assert [row[0] for row in conn.execute("SELECT order_id FROM worklist ORDER BY order_id")] == ["NEW", "OLD-LINKED"]


def _step(accession: str, status: str) -> Dataset:
    attributes = Dataset()
    scheduled = Dataset()
    scheduled.AccessionNumber = accession
    scheduled.StudyInstanceUID = ""
    attributes.ScheduledStepAttributesSequence = [scheduled]
    attributes.PerformedProcedureStepStatus = status
    attributes.Modality = "DX"
    attributes.PerformedStationAETitle = "XRAY1"
    return attributes


@pytest.mark.peer
def test_a_modality_reports_its_procedure_steps(scheduled: tuple[GatewayProcess, str, list[dict[str, Any]]],
                                               tmp_path: Path) -> None:
    """MPPS, with pynetdicom as the modality (Debian's dcmtk has no MPPS client)."""
    gateway, token, _ = scheduled
    ae = AE(ae_title="XRAY1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.ae_title)
    assert assoc.is_established
    try:
        fido, mans = generate_uid(), generate_uid()
        status, _ = assoc.send_n_create(_step("ACC1", "IN PROGRESS"), ModalityPerformedProcedureStep, fido)
        assert status.Status == 0x0000
        with client(gateway, token) as api:
            assert api.get("/api/v1/worklist/O-1").json()["state"] == "in_progress"
        offered = find(gateway.port, gateway.ae_title, ["AccessionNumber"], tmp_path / "during")
        assert sorted(a.AccessionNumber for a in offered) == ["ACC2", "ACC3"]  # being examined: off the list

        assert assoc.send_n_create(_step("ACC1", "IN PROGRESS"), ModalityPerformedProcedureStep,
                                   fido)[0].Status == 0x0111  # duplicate
        assert assoc.send_n_create(_step("ACC2", "COMPLETED"), ModalityPerformedProcedureStep,
                                   generate_uid())[0].Status == 0x0106  # a step starts IN PROGRESS
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, echoed = assoc.send_n_set(done, ModalityPerformedProcedureStep, fido)
        assert status.Status == 0x0000 and echoed is not None
        assert echoed.ScheduledStepAttributesSequence[0].AccessionNumber == "ACC1"
        assert assoc.send_n_set(done, ModalityPerformedProcedureStep, fido)[0].Status == 0x0110  # final already
        assert assoc.send_n_set(done, ModalityPerformedProcedureStep, generate_uid())[0].Status == 0x0112

        assert assoc.send_n_create(_step("ACC2", "IN PROGRESS"), ModalityPerformedProcedureStep,
                                   mans)[0].Status == 0x0000
        stopped = Dataset()
        stopped.PerformedProcedureStepStatus = "DISCONTINUED"
        assert assoc.send_n_set(stopped, ModalityPerformedProcedureStep, mans)[0].Status == 0x0000
    finally:
        assoc.release()
    with client(gateway, token) as api:
        entries = {e["order_id"]: (e["state"], e["procedure_step"]) for e in api.get("/api/v1/worklist").json()}
    assert entries == {"O-1": ("performed", "COMPLETED"), "O-2": ("scheduled", "DISCONTINUED"),
                       "O-3": ("scheduled", None)}
