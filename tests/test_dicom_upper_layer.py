"""Property-based: the asyncio engine's protocol code without I/O — command sets against pydicom
both ways, the Part 10 header read back by pydicom, messages through the upper layer however
they are cut, and arbitrary, truncated, oversized and out-of-order PDUs."""

from __future__ import annotations

import struct
from io import BytesIO

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from vmgateway.dicom.commands import MalformedCommand, decode_command, encode_command, message_pdus
from vmgateway.dicom.part10 import file_header
from vmgateway.dicom.upper_layer import (
    A_ABORT,
    MAX_ASSOCIATE_PDU,
    Acceptor,
    AssociateRequest,
    CommandReceived,
    DataReceived,
    PeerAborted,
    ReleaseRequested,
    State,
    Violation,
)

uids = st.lists(st.integers(min_value=0, max_value=99999), min_size=2, max_size=8).map(
    lambda parts: ".".join(str(p) for p in parts)).filter(lambda uid: len(uid) <= 64)
us = st.integers(min_value=0, max_value=0xFFFF)
commands = st.fixed_dictionaries(
    {"CommandField": us, "MessageID": us, "CommandDataSetType": us},
    optional={"AffectedSOPClassUID": uids, "AffectedSOPInstanceUID": uids, "Status": us,
              "MessageIDBeingRespondedTo": us, "Priority": us, "MoveDestination": st.text(
                  "ABCXYZ_0189", min_size=1, max_size=16),
              "ErrorComment": st.text("abcdefghij KLMNOP,.-0123", max_size=64).map(str.strip)},
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(commands)
@settings(max_examples=300, deadline=None)
def test_a_command_set_we_encode_is_what_pydicom_reads(command: dict[str, int | str]) -> None:
    read = decode(BytesIO(encode_command(command)), True, True)
    assert {key: read[key].value for key in command if key != "ErrorComment" or command[key]} == \
        {key: value for key, value in command.items() if key != "ErrorComment" or value}
    assert read.CommandGroupLength == len(encode_command(command)) - 12


@given(commands)
@settings(max_examples=300, deadline=None)
def test_a_command_set_pydicom_encodes_is_what_we_read(command: dict[str, int | str]) -> None:
    dataset = Dataset()
    for key, value in command.items():
        setattr(dataset, key, value)
    encoded = encode(dataset, True, True)
    assert encoded is not None
    assert decode_command(encoded) == command


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_any_bytes_as_a_command_set_are_read_or_refused_cleanly(data: bytes) -> None:
    try:
        command = decode_command(data)
    except MalformedCommand:
        return
    assert isinstance(command["CommandField"], int)


@given(uids, uids, st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]))
@settings(max_examples=100, deadline=None)
def test_the_part10_header_is_what_pydicom_reads(sop_class: str, sop_instance: str, syntax: str) -> None:
    dataset = Dataset()
    dataset.PatientName = "Fido"
    body = encode(dataset, syntax == "1.2.840.10008.1.2", True)
    assert body is not None
    read = dcmread(BytesIO(file_header(sop_class, sop_instance, syntax) + body))
    assert read.file_meta.MediaStorageSOPClassUID == sop_class
    assert read.file_meta.MediaStorageSOPInstanceUID == sop_instance
    assert read.file_meta.TransferSyntaxUID == syntax
    assert read.PatientName == "Fido"


def _established(context_id: int = 1, max_pdu: int = 16384) -> Acceptor:
    machine = Acceptor()
    assert isinstance(machine.receive(struct.pack(">BBI", 1, 0, 2) + b"\0\1")[0], AssociateRequest)
    machine.accepted(frozenset({context_id}), max_pdu)
    return machine


@given(commands, st.one_of(st.none(), st.binary(max_size=5000)), st.integers(min_value=7, max_value=3000),
       st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=300, deadline=None)
def test_a_message_comes_through_whole_however_it_is_fragmented_and_cut(
    command: dict[str, int | str], dataset: bytes | None, max_pdu: int, cuts: list[int],
) -> None:
    command["CommandDataSetType"] = 0x0101 if dataset is None else 0x0000
    stream = message_pdus(3, encode_command(command), dataset, max_pdu)
    offset = 0
    while offset < len(stream):  # every PDU within the maximum announced
        (length,) = struct.unpack_from(">I", stream, offset + 2)
        assert length <= max_pdu
        offset += 6 + length
    machine = _established(3, max_pdu)
    received, data, last = None, bytearray(), False
    for chunk in _chunks(stream, cuts):
        for event in machine.receive(chunk):
            if isinstance(event, CommandReceived):
                received = event
            else:
                assert isinstance(event, DataReceived) and not last
                data += event.data
                last = event.last
    assert received is not None and received.context_id == 3
    assert {key: value for key, value in received.command.items() if key != "CommandGroupLength"} == command
    assert received.has_dataset == (dataset is not None)
    assert (bytes(data), last) == ((dataset, True) if dataset is not None else (b"", False))
    assert not machine.in_message and not machine.in_pdu


pdus = st.tuples(st.integers(min_value=0, max_value=9), st.binary(max_size=60)).map(
    lambda t: struct.pack(">BBI", t[0], 0, len(t[1])) + t[1])
wrong_lengths = st.tuples(st.integers(min_value=0, max_value=9), st.integers(min_value=0, max_value=2**32 - 1),
                          st.binary(max_size=60)).map(lambda t: struct.pack(">BBI", t[0], 0, t[1]) + t[2])


@given(st.lists(st.one_of(pdus, wrong_lengths, st.binary(max_size=40)), max_size=12),
       st.lists(st.integers(min_value=0), max_size=20), st.booleans())
@settings(max_examples=1000, deadline=None)
def test_arbitrary_pdus_never_raise_and_never_grow_memory(parts: list[bytes], cuts: list[int],
                                                          establish: bool) -> None:
    machine = _established(1, 4096) if establish else Acceptor()
    ended = False
    for chunk in _chunks(b"".join(parts), cuts):
        for event in machine.receive(chunk):
            assert not ended, "an event after the end"
            if isinstance(event, AssociateRequest):
                machine.accepted(frozenset({1}), 4096)
                continue
            assert isinstance(event, (CommandReceived, DataReceived, ReleaseRequested, PeerAborted, Violation))
            if isinstance(event, Violation):
                assert event.abort[0] == A_ABORT and len(event.abort) == 10
            ended = isinstance(event, (Violation, PeerAborted, ReleaseRequested))
        assert machine.buffered <= 6 + MAX_ASSOCIATE_PDU + len(chunk)
    if ended:
        assert machine.state is State.CLOSED


def test_a_pdu_announcing_4_gb_is_refused_from_its_six_header_bytes() -> None:
    for machine in (Acceptor(), _established()):
        events = machine.receive(struct.pack(">BBI", 4, 0, 2**32 - 1))
        assert len(events) == 1 and isinstance(events[0], Violation)
        assert events[0].abort == bytes([7, 0, 0, 0, 0, 4, 0, 0, 2, 6])
        assert machine.state is State.CLOSED and machine.buffered == 0


def test_pdus_out_of_order_are_answered_by_a_abort_naming_an_unexpected_pdu() -> None:
    before = Acceptor().receive(struct.pack(">BBI", 4, 0, 6) + struct.pack(">IBB", 2, 1, 3))
    rq_again = _established().receive(struct.pack(">BBI", 1, 0, 2) + b"\0\1")
    data_without_command = _established().receive(struct.pack(">BBI", 4, 0, 7) + struct.pack(">IBB", 3, 1, 2) + b"x")
    unknown_context = _established().receive(struct.pack(">BBI", 4, 0, 7) + struct.pack(">IBB", 3, 9, 3) + b"x")
    for events, reason in ((before, 2), (rq_again, 2), (data_without_command, 2), (unknown_context, 6)):
        assert len(events) == 1 and isinstance(events[0], Violation), events
        assert events[0].abort[-1] == reason, events[0].reason
