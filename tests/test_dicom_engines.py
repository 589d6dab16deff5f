"""Both DICOM engines, side by side: they accept and reject the same association requests in the
same way (a differential test over the wire), the pynetdicom engine still serves every service
(it stays for one release as the way back), and the asyncio engine survives arbitrary PDUs
sent at it: each connection ends in A-ABORT, A-ASSOCIATE-RJ or a close, never a crash, a hang
or memory growth."""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import DCMTK_ENV, GatewayProcess, dcmtk
from vmgateway.dicom.association import MAX_IDENTIFIER
from vmgateway.dicom.commands import C_FIND_RQ, C_STORE_RQ, decode_command, encode_command, message_pdus

ABSTRACT_SYNTAXES = [
    "1.2.840.10008.1.1",  # Verification
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # US Image Storage
    "1.2.276.0.7230010.3.1.0.1",  # a private SOP class (dcmtk's)
    "1.2.840.10008.5.1.4.31",  # Modality Worklist FIND
    "1.2.840.10008.3.1.2.3.3",  # MPPS
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND: not offered
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE: not offered
]
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                     "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.3.4.5"]
ALLOWED = ["XRAY1", "US_ROOM2"]


def association_request(calling: str, called: str, contexts: list[tuple[str, list[str]]],
                        roles: dict[str, tuple[bool, bool]], max_length: int) -> bytes:
    asked = A_ASSOCIATE()
    asked.application_context_name = "1.2.840.10008.3.1.1.1"
    asked.calling_ae_title, asked.called_ae_title = calling, called
    proposed = []
    for index, (abstract, syntaxes) in enumerate(contexts):
        context = build_context(abstract, syntaxes)
        context.context_id = 2 * index + 1
        proposed.append(context)
    asked.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.1"
    items: list[Any] = [length, uid]
    for sop_class, (scu, scp) in roles.items():
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid, role.scu_role, role.scp_role = sop_class, scu, scp
        items.append(role)
    asked.user_information = items
    return bytes(A_ASSOCIATE_RQ(asked).encode())


def _read_pdu(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack(">I", data[2:6])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def answer_to(port: int, request: bytes) -> tuple[Any, ...]:
    """What the gateway on `port` answers `request`, in terms both engines can be compared by."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        pdu = _read_pdu(sock)
        sock.sendall(bytes([7, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-ABORT: we are done
    if pdu[:1] == b"\x03":
        rejection = A_ASSOCIATE_RJ()
        rejection.decode(pdu)
        return ("rejected", rejection.result, rejection.source, rejection.reason_diagnostic)
    assert pdu[:1] == b"\x02", pdu[:32]
    accept = A_ASSOCIATE_AC()
    accept.decode(pdu)
    answer = accept.to_primitive()
    contexts = sorted((int(c.context_id or 0), int(c.result or 0), str(c.transfer_syntax[0]) if c.result == 0 else "")
                      for c in answer.presentation_context_definition_results_list)
    roles = sorted((str(item.sop_class_uid), item.scu_role, item.scp_role) for item in answer.user_information
                   if isinstance(item, SCP_SCU_RoleSelectionNegotiation))
    return ("accepted", contexts, roles)


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    from tests.support.gateway import free_ports, write_config

    gateways = []
    for engine in ("asyncio", "pynetdicom"):
        folder = tmp_path_factory.mktemp(engine)
        dicom_port, hl7_port, api_port = free_ports(3)
        config = write_config(folder / "gateway.toml", {
            "storage": {"data_dir": str(folder / "var"), "min_free_mb": 1},
            "dicom": {"bind": "127.0.0.1", "port": dicom_port, "engine": engine, "allowed_calling_aets": ALLOWED},
            "hl7": {"bind": "127.0.0.1", "port": hl7_port}, "api": {"bind": "127.0.0.1", "port": api_port},
            "power": {"enabled": False}})
        gateway = GatewayProcess(config, folder / "var", dicom_port, hl7_port, api_port)
        gateway.start()
        gateways.append(gateway)
    yield gateways[0], gateways[1]
    for gateway in gateways:
        gateway.kill()


contexts = st.lists(st.tuples(st.sampled_from(ABSTRACT_SYNTAXES),
                              st.lists(st.sampled_from(TRANSFER_SYNTAXES), min_size=1, max_size=4, unique=True)),
                    min_size=1, max_size=8)
requests = st.builds(
    association_request,
    calling=st.sampled_from([*ALLOWED, "STRANGER"]),
    called=st.sampled_from(["VM_GATEWAY", "VM_GATEWAY", "ANY_SCP"]),
    contexts=contexts,
    roles=st.dictionaries(st.sampled_from(ABSTRACT_SYNTAXES), st.sampled_from([(True, False), (False, True), (True, True)]),
                          max_size=3),
    max_length=st.sampled_from([0, 4096, 16384, 2**20]),
)


@given(request=requests)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_both_engines_accept_and_reject_the_same_requests_alike(
    both_engines: tuple[GatewayProcess, GatewayProcess], request: bytes,
) -> None:
    asyncio_engine, pynetdicom_engine = both_engines
    assert answer_to(asyncio_engine.port, request) == answer_to(pynetdicom_engine.port, request)


@pytest.mark.peer
@pytest.mark.parametrize("engine", ["asyncio", "pynetdicom"])
def test_each_engine_serves_echo_store_worklist_and_procedure_steps(make_gateway: Any, tmp_path: Path,
                                                                    engine: str) -> None:
    gateway = make_gateway(dicom={"engine": engine})
    assert dcmtk("echoscu", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port)).returncode == 0
    files = copies_of_ct_small(tmp_path / "ct", 5)
    sent = subprocess.run(["storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), *map(str, files)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert len(gateway.instances()) == 5
    found = dcmtk("findscu", "-v", "-W", "-aec", "VM_GATEWAY", "-k", "PatientName=*", "127.0.0.1", str(gateway.port))
    assert found.returncode == 0 and "Received Final Find Response (Success)" in found.stdout, found.stdout
    assert "(Pending)" not in found.stdout  # the worklist is empty

    ae = AE(ae_title="XRAY1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="VM_GATEWAY")
    assert assoc.is_established
    try:
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        step.ScheduledStepAttributesSequence = [Dataset()]
        step.ScheduledStepAttributesSequence[0].AccessionNumber = "A-77"
        status, _ = assoc.send_n_create(step, ModalityPerformedProcedureStep, "1.2.826.0.1.3680043.10.543.77")
        assert status.Status == 0x0000
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, answer = assoc.send_n_set(done, ModalityPerformedProcedureStep, "1.2.826.0.1.3680043.10.543.77")
        assert status.Status == 0x0000 and answer is not None and answer.PerformedProcedureStepStatus == "COMPLETED"
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, "1.2.826.0.1.3680043.10.543.78")
        assert status.Status == 0x0112  # no such step
    finally:
        assoc.release()


pdus = st.tuples(st.integers(min_value=0, max_value=9), st.binary(max_size=80)).map(
    lambda t: struct.pack(">BBI", t[0], 0, len(t[1])) + t[1])
lying = st.tuples(st.integers(min_value=0, max_value=9), st.integers(min_value=0, max_value=2**32 - 1),
                  st.binary(max_size=80)).map(lambda t: struct.pack(">BBI", t[0], 0, t[1]) + t[2])
p_data = st.tuples(st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=3),
                   st.binary(max_size=80)).map(
    lambda t: struct.pack(">BBIIBB", 4, 0, len(t[2]) + 6, len(t[2]) + 2, t[0], t[1]) + t[2])


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    from tests.support.gateway import free_ports, write_config

    folder = tmp_path_factory.mktemp("fuzzed")
    dicom_port, hl7_port, api_port = free_ports(3)
    config = write_config(folder / "gateway.toml", {
        "storage": {"data_dir": str(folder / "var"), "min_free_mb": 1},
        "dicom": {"bind": "127.0.0.1", "port": dicom_port, "acse_timeout_s": 3, "network_timeout_s": 3},
        "hl7": {"bind": "127.0.0.1", "port": hl7_port}, "api": {"bind": "127.0.0.1", "port": api_port},
        "power": {"enabled": False}})
    gateway = GatewayProcess(config, folder / "var", dicom_port, hl7_port, api_port)
    gateway.start()
    yield gateway
    gateway.kill()


@given(associate=st.booleans(), junk=st.lists(st.one_of(pdus, lying, p_data, st.binary(max_size=60)), max_size=8))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_pdus_end_in_abort_rejection_or_close_and_change_nothing(
    fuzzed: GatewayProcess, associate: bool, junk: list[bytes],
) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        if associate:
            sock.sendall(association_request("XRAY1", "VM_GATEWAY", [(ABSTRACT_SYNTAXES[1], TRANSFER_SYNTAXES[:1])],
                                             {}, 16384))
            assert _read_pdu(sock)[:1] == b"\x02"
        try:
            sock.sendall(b"".join(junk))
            sock.shutdown(socket.SHUT_WR)  # all said: the gateway must end it (a close is an end too)
        except ConnectionError:
            return  # it ended it already
        answers = b""
        while chunk := sock.recv(65536):  # bounded: the socket's 10 s timeout raises
            answers += chunk
        pdu_types = set()
        while answers:
            pdu_types.add(answers[0])
            answers = answers[6 + struct.unpack(">I", answers[2:6])[0]:]
        assert pdu_types <= {0x02, 0x03, 0x04, 0x06, 0x07}  # AC, RJ, a DIMSE answer, release, abort


def _rss_mb(gateway: GatewayProcess) -> float:
    assert gateway.proc is not None
    for line in Path(f"/proc/{gateway.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.peer
def test_after_much_junk_the_port_still_serves_and_memory_did_not_grow(fuzzed: GatewayProcess) -> None:
    """Runs after the fuzzing above (same gateway): 300 more connections of seeded junk, each
    opening with a valid association half the time, sent all at once."""
    before = _rss_mb(fuzzed)
    for seed in range(300):
        chance = random.Random(seed)
        junk = b"".join(struct.pack(">BBI", chance.randrange(10), 0, chance.choice([0, 6, 100, 2**31, 2**32 - 1]))
                        + chance.randbytes(chance.randrange(200)) for _ in range(chance.randrange(1, 6)))
        with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
            if seed % 2:
                sock.sendall(association_request("XRAY1", "VM_GATEWAY", [(ABSTRACT_SYNTAXES[1], TRANSFER_SYNTAXES[:1])],
                                                 {}, 16384))
            try:
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):  # bounded: the socket's timeout raises
                    pass
            except ConnectionError:
                pass
    assert dcmtk("echoscu", "-aec", "VM_GATEWAY", "127.0.0.1", str(fuzzed.port)).returncode == 0
    assert fuzzed.instances() == []
    assert fuzzed.proc is not None and fuzzed.proc.poll() is None
    assert _rss_mb(fuzzed) - before < 10, f"RSS grew from {before:.0f} MB to {_rss_mb(fuzzed):.0f} MB"


def test_an_idle_association_is_aborted_after_the_network_timeout(fuzzed: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        sock.sendall(association_request("XRAY1", "VM_GATEWAY", [(ABSTRACT_SYNTAXES[0], TRANSFER_SYNTAXES[:1])], {},
                                         16384))
        assert _read_pdu(sock)[:1] == b"\x02"
        began = time.monotonic()
        answer = _read_pdu(sock)  # nothing sent: the gateway's A-ABORT comes after network_timeout_s (3 s)
        waited = time.monotonic() - began
    assert answer[:1] == b"\x07", answer
    assert 2.5 < waited < 8, f"aborted after {waited:.1f} s"
    fuzzed.wait_for_log("association idle, aborted")


def _dimse_answer(sock: socket.socket) -> dict[str, int | str]:
    """The command set of the next DIMSE message (its PDUs gathered until the last command fragment)."""
    command = b""
    while True:
        pdu = _read_pdu(sock)
        assert pdu[:1] == b"\x04", pdu[:16]
        _, _, control = struct.unpack(">IBB", pdu[6:12])
        command += pdu[12:]
        if control & 3 == 3:
            return decode_command(command)


@pytest.mark.parametrize(("abstract", "field", "dataset", "status"), [
    ("1.2.840.10008.5.1.4.31", C_FIND_RQ, bytes(MAX_IDENTIFIER + 2), 0xA900),  # a query too long to read
    ("1.2.840.10008.1.1", C_STORE_RQ, b"\x08\x00\x18\x00\x02\x00\x00\x001\x00", 0x0122),  # C-STORE on Verification
    ("1.2.840.10008.5.1.4.1.1.2", 0x0010, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", 0x0211),  # a C-GET
])
def test_requests_the_gateway_cannot_serve_are_answered_with_their_status(
    fuzzed: GatewayProcess, abstract: str, field: int, dataset: bytes, status: int,
) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        sock.sendall(association_request("XRAY1", "VM_GATEWAY", [(abstract, TRANSFER_SYNTAXES[:1])], {}, 16384))
        assert _read_pdu(sock)[:1] == b"\x02"
        command: dict[str, int | str] = {"CommandField": field, "MessageID": 7, "AffectedSOPClassUID": abstract,
                                         "CommandDataSetType": 0x0000, "AffectedSOPInstanceUID": "1.2.3.4", "Priority": 0}
        sock.sendall(message_pdus(1, encode_command(command), dataset, 16384))
        answer = _dimse_answer(sock)
    assert answer["CommandField"] == field | 0x8000
    assert answer["MessageIDBeingRespondedTo"] == 7
    assert answer["Status"] == status, answer
    assert fuzzed.instances() == []
