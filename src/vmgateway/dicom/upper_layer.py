"""The DICOM upper layer of an association's acceptor (PS3.8 9), without I/O: bytes in, events out.

`Acceptor` frames the byte stream into PDUs and follows the acceptor's side of the state machine
(PS3.8 9.2, states Sta2 → Sta6 → Sta13): an A-ASSOCIATE-RQ first, then P-DATA-TF, A-RELEASE-RQ
or A-ABORT. P-DATA is split into its PDV items and reassembled into DIMSE messages: the command
set whole (it is small), the data set as fragments, handed on as they arrive so that a C-STORE
goes to disk without ever being whole in memory.

Every length is checked from the PDU's header before anything is buffered: a PDU longer than
allowed (before the association: longer than any sane A-ASSOCIATE-RQ; after it: a P-DATA-TF
longer than the maximum we announced, PS3.8 9.3.1) is a `Violation` at once — a header
announcing 4 GB costs nothing. Whatever breaks the protocol becomes a `Violation` carrying the
A-ABORT to send; nothing here raises on bad input (tests/test_dicom_upper_layer.py fuzzes it).
The I/O, the deadlines and the answers live in vmgateway.dicom.association.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from vmgateway.dicom.commands import NO_DATASET, Command, MalformedCommand, decode_command

MAX_ASSOCIATE_PDU = 256 * 1024
"""Longest PDU accepted other than a P-DATA-TF of an established association. An A-ASSOCIATE-RQ
proposing all 128 presentation contexts, each with ten transfer syntaxes, is under 40 KB."""
MAX_COMMAND_SET = 64 * 1024
"""A command set is a few hundred bytes; more is not a command."""

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
_KNOWN_TYPES = {A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT}
_PDU_HEADER = struct.Struct(">BBI")
_ITEM_HEADER = struct.Struct(">IBB")

# A-ABORT source and reason (PS3.8 9.3.8)
SERVICE_USER, SERVICE_PROVIDER = 0, 2
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0, 1, 2, 6


def abort_pdu(source: int = SERVICE_PROVIDER, reason: int = NOT_SPECIFIED) -> bytes:
    """An A-ABORT PDU (a service user's abort gives no reason: PS3.8 9.3.8)."""
    return _PDU_HEADER.pack(A_ABORT, 0, 4) + bytes([0, 0, source, reason if source == SERVICE_PROVIDER else 0])


RELEASE_RP = _PDU_HEADER.pack(A_RELEASE_RP, 0, 4) + bytes(4)


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """A whole A-ASSOCIATE-RQ PDU, header included: decide, then call `accepted` or `rejected`."""

    pdu: bytes


@dataclass(frozen=True, slots=True)
class CommandReceived:
    context_id: int
    command: Command
    has_dataset: bool


@dataclass(frozen=True, slots=True)
class DataReceived:
    """A fragment of the data set of the command received last; `last` ends the message."""

    context_id: int
    data: memoryview
    last: bool


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    """A-RELEASE-RQ: answer RELEASE_RP and close."""


@dataclass(frozen=True, slots=True)
class PeerAborted:
    """A-ABORT from the peer: close."""


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke the protocol: send `abort` and close."""

    reason: str
    abort: bytes
    summary: str = "dicom protocol violation, association aborted"
    """What to log (one line for each kind, so that a flood is said sparingly)."""


Event = AssociateRequest | CommandReceived | DataReceived | ReleaseRequested | PeerAborted | Violation


class State(Enum):
    AWAITING_REQUEST = "awaiting A-ASSOCIATE-RQ"  # Sta2
    DECIDING = "deciding"  # Sta3
    ESTABLISHED = "established"  # Sta6
    CLOSED = "closed"  # Sta13/Sta1: nothing more is read


class Acceptor:
    """One association's upper layer, from the acceptor's side."""

    def __init__(self) -> None:
        self.state = State.AWAITING_REQUEST
        self.pdus_received = 0
        self._buffer = bytearray()
        self._contexts: frozenset[int] = frozenset()
        self._max_pdu = 0
        self._command = bytearray()
        self._command_context: int | None = None
        self._data_context: int | None = None
        """While a data set is expected: the presentation context of its command."""

    @property
    def in_message(self) -> bool:
        """Whether part of a DIMSE message has arrived and the rest has not."""
        return self._command_context is not None or self._data_context is not None

    @property
    def buffered(self) -> int:
        """Bytes held of PDUs not yet whole."""
        return len(self._buffer)

    @property
    def in_pdu(self) -> bool:
        """Whether part of a PDU has arrived and the rest has not."""
        return bool(self._buffer)

    def accepted(self, contexts: frozenset[int], max_pdu: int) -> None:
        """The A-ASSOCIATE-AC was sent: P-DATA may use `contexts`, each PDU up to `max_pdu` long."""
        assert self.state is State.DECIDING
        self.state, self._contexts, self._max_pdu = State.ESTABLISHED, contexts, max_pdu

    def closed(self) -> None:
        """The A-ASSOCIATE-RJ (or an A-ABORT) was sent: nothing more is read."""
        self.state = State.CLOSED

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Events for the PDUs that `data` completes. After an AssociateRequest nothing more is
        framed until the decision: call `receive(b"")` then for whatever arrived behind it."""
        if self.state is State.CLOSED:
            return []
        self._buffer += data
        events: list[Event] = []
        while self.state in (State.AWAITING_REQUEST, State.ESTABLISHED) and len(self._buffer) >= 6:
            pdu_type, _, length = _PDU_HEADER.unpack_from(self._buffer)
            allowed = self._max_pdu if pdu_type == P_DATA_TF and self.state is State.ESTABLISHED else MAX_ASSOCIATE_PDU
            if length > allowed:
                return [*events, self._violation(f"PDU of type {pdu_type:#04x} announces {length} bytes, more than"
                                                 f" the {allowed} allowed", INVALID_PARAMETER,
                                                 "dicom PDU refused: longer than allowed")]
            if len(self._buffer) < 6 + length:
                break
            pdu = self._buffer[:6 + length]  # one copy; the fragments handed on are views of it
            del self._buffer[:6 + length]
            self.pdus_received += 1
            events += self._pdu(pdu_type, pdu)
            if events and isinstance(events[-1], (Violation, PeerAborted)):
                self.state = State.CLOSED
                break
        return events

    def _pdu(self, pdu_type: int, pdu: bytearray) -> list[Event]:
        if pdu_type == A_ABORT:
            return [PeerAborted()]
        if pdu_type not in _KNOWN_TYPES:
            return [self._violation(f"unrecognised PDU type {pdu_type:#04x}", UNRECOGNIZED_PDU)]
        if self.state is State.AWAITING_REQUEST:
            if pdu_type != A_ASSOCIATE_RQ:
                return [self._violation(f"PDU type {pdu_type:#04x} before an A-ASSOCIATE-RQ", UNEXPECTED_PDU)]
            self.state = State.DECIDING
            return [AssociateRequest(bytes(pdu))]
        if pdu_type == A_RELEASE_RQ:
            self.state = State.CLOSED
            return [ReleaseRequested()]
        if pdu_type != P_DATA_TF:
            return [self._violation(f"PDU type {pdu_type:#04x} on an established association", UNEXPECTED_PDU)]
        return self._p_data(memoryview(pdu)[6:])

    def _p_data(self, body: memoryview) -> list[Event]:
        """The PDV items of one P-DATA-TF (PS3.8 9.3.5.1, E.2)."""
        events: list[Event] = []
        if not body:
            return [self._violation("P-DATA-TF without a presentation data value", INVALID_PARAMETER)]
        offset = 0
        while offset < len(body):
            if len(body) - offset < 6:
                return [self._violation("P-DATA-TF ends inside a PDV item header", INVALID_PARAMETER)]
            length, context_id, control = _ITEM_HEADER.unpack_from(body, offset)
            if length < 2 or length > len(body) - offset - 4:
                return [self._violation(f"PDV item length {length} does not fit its P-DATA-TF", INVALID_PARAMETER)]
            if context_id not in self._contexts:
                return [self._violation(f"PDV for presentation context {context_id}, which was not accepted",
                                        INVALID_PARAMETER)]
            fragment = body[offset + 6:offset + 4 + length]
            offset += 4 + length
            event = self._command_fragment(context_id, fragment, bool(control & 2)) if control & 1 \
                else self._data_fragment(context_id, fragment, bool(control & 2))
            if event is not None:
                events.append(event)
                if isinstance(event, Violation):
                    return [event]
        return events

    def _command_fragment(self, context_id: int, fragment: memoryview, last: bool) -> Event | None:
        if self._data_context is not None:
            return self._violation("a command fragment while a data set was expected", UNEXPECTED_PDU)
        if self._command_context not in (None, context_id):
            return self._violation("command fragments on two presentation contexts", INVALID_PARAMETER)
        if len(self._command) + len(fragment) > MAX_COMMAND_SET:
            return self._violation(f"command set longer than {MAX_COMMAND_SET} bytes", INVALID_PARAMETER)
        self._command += fragment
        self._command_context = context_id
        if not last:
            return None
        encoded, self._command, self._command_context = self._command, bytearray(), None
        try:
            command = decode_command(encoded)
        except MalformedCommand as exc:
            return self._violation(f"unreadable command set: {exc}", INVALID_PARAMETER)
        has_dataset = command.get("CommandDataSetType", NO_DATASET) != NO_DATASET
        if has_dataset:
            self._data_context = context_id
        return CommandReceived(context_id, command, has_dataset)

    def _data_fragment(self, context_id: int, fragment: memoryview, last: bool) -> Event:
        if self._data_context is None:
            return self._violation("a data set fragment without its command", UNEXPECTED_PDU)
        if context_id != self._data_context:
            return self._violation("a data set on another presentation context than its command", INVALID_PARAMETER)
        if last:
            self._data_context = None
        return DataReceived(context_id, fragment, last)

    def _violation(self, reason: str, abort_reason: int, summary: str = "") -> Violation:
        self.state = State.CLOSED
        self._buffer.clear()
        violation = Violation(reason, abort_pdu(SERVICE_PROVIDER, abort_reason))
        return violation if not summary else Violation(reason, violation.abort, summary)
