"""DIMSE command sets (PS3.7 E) and the P-DATA-TF PDUs that carry a message (PS3.8 9.3.5, E):
encoded and decoded without I/O and without pydicom.

A command set is a handful of group-0000 elements in Implicit VR Little Endian. Built through
pydicom's Dataset, one C-STORE response cost 0.8 ms here (through pynetdicom's DIMSE message
classes 1.4 ms), more than everything else the asyncio acceptor does for a small instance, so
the few fixed types are packed with struct. Both directions are checked against pydicom with
hypothesis (tests/test_dicom_upper_layer.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

P_DATA_TF = 0x04

C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140
RESPONSE_BIT = 0x8000
NO_DATASET = 0x0101
"""CommandDataSetType (0000,0800) when no data set follows; any other value means one does."""
WITH_DATASET = 0x0000

_TYPES: dict[int, tuple[str, str]] = {
    0x0000: ("CommandGroupLength", "UL"),
    0x0002: ("AffectedSOPClassUID", "UI"),
    0x0003: ("RequestedSOPClassUID", "UI"),
    0x0100: ("CommandField", "US"),
    0x0110: ("MessageID", "US"),
    0x0120: ("MessageIDBeingRespondedTo", "US"),
    0x0600: ("MoveDestination", "AE"),
    0x0700: ("Priority", "US"),
    0x0800: ("CommandDataSetType", "US"),
    0x0900: ("Status", "US"),
    0x0902: ("ErrorComment", "LO"),
    0x0903: ("ErrorID", "US"),
    0x1000: ("AffectedSOPInstanceUID", "UI"),
    0x1001: ("RequestedSOPInstanceUID", "UI"),
    0x1002: ("EventTypeID", "US"),
    0x1008: ("ActionTypeID", "US"),
    0x1020: ("NumberOfRemainingSuboperations", "US"),
    0x1021: ("NumberOfCompletedSuboperations", "US"),
    0x1022: ("NumberOfFailedSuboperations", "US"),
    0x1023: ("NumberOfWarningSuboperations", "US"),
    0x1030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x1031: ("MoveOriginatorMessageID", "US"),
}
_ELEMENTS = {keyword: (element, vr) for element, (keyword, vr) in _TYPES.items()}
_HEADER = struct.Struct("<HHI")
_PDV_HEADER = struct.Struct(">BBIIBB")
"""A P-DATA-TF PDU holding one PDV item: type, reserved, PDU length, item length, context ID,
message control header."""

Command = dict[str, int | str]
"""A decoded command set, by keyword; elements we do not know are left out."""


class MalformedCommand(ValueError):
    """A command set that is not group-0000 Implicit VR Little Endian, or lacks CommandField."""


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """The elements of an encoded command set (US as int, UI/AE/LO as str without padding)."""
    view = memoryview(data)
    command: Command = {}
    offset = 0
    while offset < len(view):
        if offset + 8 > len(view):
            raise MalformedCommand("command set ends inside an element header")
        group, element, length = _HEADER.unpack_from(view, offset)
        offset += 8
        if group != 0x0000:
            raise MalformedCommand(f"element ({group:04X},{element:04X}) outside group 0000 in a command set")
        if length > len(view) - offset:
            raise MalformedCommand(f"element (0000,{element:04X}) is longer than the command set")
        value = view[offset:offset + length]
        offset += length
        known = _TYPES.get(element)
        if known is None:
            continue
        keyword, vr = known
        if vr in ("US", "UL"):
            size = 2 if vr == "US" else 4
            if length != size:
                raise MalformedCommand(f"{keyword} has {length} bytes, not {size}")
            command[keyword] = int.from_bytes(value, "little")
        else:
            command[keyword] = bytes(value).decode("ascii", "replace").rstrip("\0 ")
    if not isinstance(command.get("CommandField"), int):
        raise MalformedCommand("command set without CommandField (0000,0100)")
    return command


def encode_command(command: Command) -> bytes:
    """`command`'s elements in tag order, after CommandGroupLength (computed here)."""
    body = bytearray()
    for keyword, value in sorted(command.items(), key=lambda item: _ELEMENTS[item[0]][0]):
        element, vr = _ELEMENTS[keyword]
        if element == 0x0000:
            continue
        if vr in ("US", "UL"):
            assert isinstance(value, int)
            encoded = value.to_bytes(2 if vr == "US" else 4, "little")
        else:
            assert isinstance(value, str)
            encoded = value.encode("ascii")
            if len(encoded) % 2:
                encoded += b"\0" if vr == "UI" else b" "
        body += _HEADER.pack(0x0000, element, len(encoded)) + encoded
    return _HEADER.pack(0x0000, 0x0000, 4) + len(body).to_bytes(4, "little") + bytes(body)


def message_pdus(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """A whole DIMSE message as P-DATA-TF PDUs, one fragment per PDU, none longer than the
    peer's maximum length (`max_pdu`, 0 for no limit)."""
    out = bytearray()
    for control, fragment in _fragments(command, dataset, max_pdu):
        out += _PDV_HEADER.pack(P_DATA_TF, 0, len(fragment) + 6, len(fragment) + 2, context_id, control)
        out += fragment
    return bytes(out)


def _fragments(command: bytes, dataset: bytes | None, max_pdu: int) -> Iterator[tuple[int, bytes]]:
    """(message control header, bytes): bit 0 command, bit 1 last fragment (PS3.8 E.2)."""
    size = max_pdu - 6 if max_pdu else max(len(command), len(dataset or b""), 1)
    for is_command, data in ((1, command), (0, dataset)):
        if data is None:
            continue
        pieces = [data[start:start + size] for start in range(0, len(data), size)] or [b""]
        for index, piece in enumerate(pieces):
            yield is_command | (2 if index == len(pieces) - 1 else 0), piece
