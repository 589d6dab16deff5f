"""One association on port 4006 in the gateway's event loop (the asyncio engine): the reads and
writes, the deadlines, and the answers of the DICOM services.

The protocol itself is vmgateway.dicom.upper_layer's (bytes in, events out) and the decision to
accept is vmgateway.dicom.negotiation's; this module does what needs I/O. A C-STORE's data set
is written to a file in the spool's incoming folder fragment by fragment as it arrives; the
response is sent only after `Store.put_dicom` returned — the file and its journal row fsync'ed
— in a worker thread, where parallel associations share the journal's commits (group commit).
Whatever goes wrong in a service becomes its status in one place (vmgateway.dicom.statuses).

Deadlines (PS3.8 ARTIM and the gateway's own): the A-ASSOCIATE-RQ must arrive whole within
`dicom.acse_timeout_s` of the connection; after that every PDU must arrive whole within
`dicom.network_timeout_s` of its first byte, and the next must start within
`dicom.network_timeout_s` (within `dicom.dimse_timeout_s` while a message is half received);
otherwise A-ABORT and the connection is closed — a trickle counts as idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)

from vmgateway.config import DicomConfig
from vmgateway.dicom import commands
from vmgateway.dicom.commands import Command, message_pdus
from vmgateway.dicom.keeping import answer_store, note_echo
from vmgateway.dicom.mpps import ProcedureStepProvider
from vmgateway.dicom.negotiation import Accepted, Policy, UnreadableRequest, decide
from vmgateway.dicom.part10 import file_header
from vmgateway.dicom.receiving import ReceivingFile
from vmgateway.dicom.rejection import describe_rejection
from vmgateway.dicom.statuses import (
    CANNOT_UNDERSTAND,
    SOP_CLASS_NOT_SUPPORTED,
    UNRECOGNIZED_OPERATION,
    UndecodableDataset,
)
from vmgateway.dicom.upper_layer import (
    RELEASE_RP,
    SERVICE_USER,
    Acceptor,
    AssociateRequest,
    CommandReceived,
    DataReceived,
    Event,
    PeerAborted,
    ReleaseRequested,
    Violation,
    abort_pdu,
)
from vmgateway.dicom.worklist import WorklistProvider
from vmgateway.logs import SayingSparingly
from vmgateway.model import Sender
from vmgateway.store import Store

log = logging.getLogger(__name__)
sparing = SayingSparingly(log)

_READ_SIZE = 256 * 1024
MAX_IDENTIFIER = 4 * 2**20
"""Longest worklist query or procedure step attribute list taken into memory."""
_WORKLIST, _PROCEDURE_STEP = str(ModalityWorklistInformationFind), str(ModalityPerformedProcedureStep)
_NOT_STORAGE = {str(Verification), _WORKLIST, _PROCEDURE_STEP}


@dataclass
class Services:
    """What an association answers with; shared by all of them."""

    store: Store
    worklist: WorklistProvider
    steps: ProcedureStepProvider


class _End(Exception):
    """The association is over (released, aborted, timed out, or the peer left)."""


class Association:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str,
                 config: DicomConfig, services: Services, policy: Callable[[], Policy],
                 claim: Callable[[Association], bool], unclaim: Callable[[Association], None]) -> None:
        """`policy` is asked at the A-ASSOCIATE-RQ (who may call); `claim` takes one of the
        association slots for it, or says there is none; `unclaim` gives it back if rejected."""
        self.reader, self.writer, self.address = reader, writer, address
        self.config = config
        self.services = services
        self._policy = policy
        self._claim = claim
        self._unclaim = unclaim
        self.machine = Acceptor()
        self.established = False
        self.sender = Sender("dicom", "", address)
        self._accepted: Accepted | None = None
        self._opened = time.monotonic()
        self._quiet_since = self._opened
        self._pdu_started: float | None = None
        self._message: _Message | None = None

    async def run(self) -> None:
        """Converse until the association ends; a half-received instance is dropped (the sender,
        never answered, keeps it)."""
        try:
            while True:
                events = deque(await self._read())
                while events:
                    event = events.popleft()
                    await self._handle(event)
                    if isinstance(event, AssociateRequest) and self.established:
                        events.extend(self.machine.receive(b""))
        except _End:
            pass
        except (ConnectionError, OSError):
            if self.established:
                log.warning("association lost", extra={"calling_ae": self.sender.name, "address": self.address})
        finally:
            if self._message is not None and self._message.discard():
                log.info("removed unacknowledged partial instance: the association ended during it",
                         extra={"calling_ae": self.sender.name, "address": self.address})

    def abort(self) -> None:
        """A-ABORT from our side (a drain that ran out of time, the gateway stopping)."""
        self._send_and_close(abort_pdu(SERVICE_USER))

    # --- reading ---

    async def _read(self) -> list[Event]:
        deadline = self._deadline()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                data = await self.reader.read(_READ_SIZE)
        except TimeoutError:
            self._timed_out()
        if not data:
            if self.established:
                log.warning("association lost: the peer closed the connection",
                            extra={"calling_ae": self.sender.name, "address": self.address})
            raise _End
        now, whole = time.monotonic(), self.machine.pdus_received
        events = self.machine.receive(data)
        if self.machine.pdus_received > whole:  # PDUs were completed: the one under way began now
            self._quiet_since = now
            self._pdu_started = now if self.machine.in_pdu else None
        elif self._pdu_started is None:
            self._pdu_started = now
        return events

    def _deadline(self) -> float:
        if not self.established:
            return self._opened + self.config.acse_timeout_s
        if self._pdu_started is not None:
            return self._pdu_started + self.config.network_timeout_s
        idle = self.config.dimse_timeout_s if self.machine.in_message else self.config.network_timeout_s
        return self._quiet_since + idle

    def _timed_out(self) -> None:
        if not self.established:
            sparing.warning("dicom connection cut: a PDU did not arrive in time", address=self.address,
                            waiting_for="A-ASSOCIATE-RQ", acse_timeout_s=self.config.acse_timeout_s)
        elif self._pdu_started is not None:
            sparing.warning("dicom connection cut: a PDU did not arrive in time", address=self.address,
                            calling_ae=self.sender.name, network_timeout_s=self.config.network_timeout_s)
        else:
            log.warning("association idle, aborted", extra={"calling_ae": self.sender.name, "address": self.address})
        self._send_and_close(abort_pdu())
        raise _End

    # --- events ---

    async def _handle(self, event: Event) -> None:
        if isinstance(event, AssociateRequest):
            await self._decide(event.pdu)
        elif isinstance(event, CommandReceived):
            await self._command(event)
        elif isinstance(event, DataReceived):
            assert self._message is not None
            self._message.take(event.data)
            if event.last:
                message, self._message = self._message, None
                await self._answer(message)
        elif isinstance(event, ReleaseRequested):
            await self._release()
        elif isinstance(event, PeerAborted):
            log.warning("association aborted", extra={"calling_ae": self.sender.name, "address": self.address})
            raise _End
        else:
            assert isinstance(event, Violation)
            sparing.warning(event.summary, address=self.address, calling_ae=self.sender.name, reason=event.reason)
            self._send_and_close(event.abort)
            raise _End

    async def _decide(self, pdu: bytes) -> None:
        room = self._claim(self)  # before the wait below, so that two requests cannot take one slot
        try:  # in a worker thread: a request never seen before can take a tenth of a second
            decision = await asyncio.to_thread(decide, pdu, self._policy(), room)
        except UnreadableRequest as exc:
            self._unclaim(self)
            sparing.warning("dicom association request refused", address=self.address, reason=str(exc))
            self.machine.closed()
            self._send_and_close(abort_pdu(reason=2))
            raise _End from None
        self.sender = Sender("dicom", decision.calling_ae, self.address)
        if not isinstance(decision, Accepted):
            self._unclaim(self)
            self.machine.closed()
            log.warning("association rejected", extra={
                "calling_ae": decision.calling_ae, "called_ae": decision.called_ae, "address": self.address,
                "reason": describe_rejection(decision.primitive)})
            self.writer.write(decision.pdu)
            await self._drain_writes()
            await self._wait_for_close()
            raise _End
        self._accepted = decision
        self.machine.accepted(frozenset(decision.contexts), self.config.max_pdu)
        self.writer.write(decision.pdu)
        self.established = True
        self._quiet_since = time.monotonic()
        log.info("association accepted", extra={"calling_ae": decision.calling_ae, "address": self.address})
        await self._drain_writes()

    async def _release(self) -> None:
        self.writer.write(RELEASE_RP)
        await self._drain_writes()
        await self._wait_for_close()
        raise _End

    async def _wait_for_close(self) -> None:
        """After A-RELEASE-RP or A-ASSOCIATE-RJ the peer closes the connection (PS3.8 Sta13); we
        close it ourselves after the ARTIM time."""
        try:
            async with asyncio.timeout(self.config.acse_timeout_s):
                while await self.reader.read(_READ_SIZE):
                    pass
        except TimeoutError:
            pass

    # --- DIMSE ---

    async def _command(self, event: CommandReceived) -> None:
        assert self._accepted is not None
        context = self._accepted.contexts[event.context_id]
        message = _Message(event.context_id, str(context.abstract_syntax), UID(str(context.transfer_syntax[0])),
                           event.command)
        if event.has_dataset:
            if message.field == commands.C_STORE_RQ and message.service_ok:
                message.receive_into(ReceivingFile(self.services.store, hashing=True), file_header(
                    str(event.command.get("AffectedSOPClassUID", "")),
                    str(event.command.get("AffectedSOPInstanceUID", "")), str(message.transfer_syntax)))
            self._message = message
            return
        await self._answer(message)

    async def _answer(self, message: _Message) -> None:
        field = message.field
        if field == commands.C_CANCEL_RQ:
            return  # nothing of ours is under way when we read: C-FIND answers are all sent at once
        if field & commands.RESPONSE_BIT:
            sparing.warning("dicom response received where none was asked for, association aborted",
                            address=self.address, calling_ae=self.sender.name, command_field=field)
            self._send_and_close(abort_pdu(reason=2))
            raise _End
        if field == commands.C_ECHO_RQ:
            await asyncio.to_thread(note_echo, self.services.store, self.sender)
            await self._respond(message, commands.C_ECHO_RSP, 0x0000)
        elif not message.service_ok:
            message.discard()
            await self._respond(message, field | commands.RESPONSE_BIT, SOP_CLASS_NOT_SUPPORTED)
        elif field == commands.C_STORE_RQ:
            await self._store(message)
        elif field == commands.C_FIND_RQ:
            await self._find(message)
        elif field in (commands.N_CREATE_RQ, commands.N_SET_RQ):
            await self._procedure_step(message)
        else:
            await self._respond(message, field | commands.RESPONSE_BIT, UNRECOGNIZED_OPERATION)

    async def _store(self, message: _Message) -> None:
        received = message.close_file()
        if received is None:  # a C-STORE-RQ that said it had no data set
            await self._respond(message, commands.C_STORE_RSP, CANNOT_UNDERSTAND,
                                AffectedSOPInstanceUID=str(message.command.get("AffectedSOPInstanceUID", "")))
            return
        try:
            answer = await asyncio.to_thread(answer_store, self.services.store, self.sender, *received)
        finally:
            Path(received[0]).unlink(missing_ok=True)  # kept: renamed away already; refused: not wanted
        await self._respond(message, commands.C_STORE_RSP, answer,
                            AffectedSOPInstanceUID=str(message.command.get("AffectedSOPInstanceUID", "")))

    async def _find(self, message: _Message) -> None:
        worklist, query = self.services.worklist, partial(_decode_dataset, message.data(), message.transfer_syntax)
        answers = await asyncio.to_thread(lambda: list(worklist.find(self.sender, query, lambda: False)))
        out = bytearray()
        for status, identifier in answers:
            out += self._encoded(message, commands.C_FIND_RSP, status, identifier)
        self.writer.write(out)
        await self._drain_writes()

    async def _procedure_step(self, message: _Message) -> None:
        """N-CREATE or N-SET; the provider decodes the attributes inside its status seam."""
        steps, command = self.services.steps, message.command
        attributes = partial(_decode_dataset, message.data(), message.transfer_syntax)
        if message.field == commands.N_CREATE_RQ:
            uid = str(command.get("AffectedSOPInstanceUID", ""))
            status, answer = await asyncio.to_thread(steps.create, self.sender, uid, attributes)
            await self._respond(message, commands.N_CREATE_RSP, status, answer, AffectedSOPInstanceUID=uid)
        else:
            uid = str(command.get("RequestedSOPInstanceUID", ""))
            status, answer = await asyncio.to_thread(steps.update, self.sender, uid, attributes)
            await self._respond(message, commands.N_SET_RSP, status, answer, AffectedSOPInstanceUID=uid)

    async def _respond(self, message: _Message, field: int, status: int | Dataset, dataset: Dataset | None = None,
                       **elements: str) -> None:
        self.writer.write(self._encoded(message, field, status, dataset, **elements))
        await self._drain_writes()

    def _encoded(self, message: _Message, field: int, status: int | Dataset, dataset: Dataset | None,
                 **elements: str) -> bytes:
        assert self._accepted is not None
        command: Command = {
            "CommandField": field,
            "MessageIDBeingRespondedTo": int(message.command.get("MessageID", 0)),
            "AffectedSOPClassUID": str(message.command.get("AffectedSOPClassUID")
                                       or message.command.get("RequestedSOPClassUID") or message.abstract_syntax),
            "CommandDataSetType": commands.NO_DATASET if dataset is None else commands.WITH_DATASET,
            **commands_status(status), **{key: value for key, value in elements.items() if value},
        }
        body = None if dataset is None else _encode_dataset(dataset, message.transfer_syntax)
        return message_pdus(message.context_id, commands.encode_command(command), body, self._accepted.peer_max_pdu)

    # --- writing ---

    async def _drain_writes(self) -> None:
        """Wait until what was written is on its way; a peer that stops reading is cut."""
        try:
            async with asyncio.timeout(self.config.network_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            log.warning("association aborted: the peer does not read", extra={"address": self.address})
            self._send_and_close(abort_pdu())
            raise _End from None
        # The peer's silence is counted from our answer: the time we took is not its idleness.
        self._quiet_since = time.monotonic()
        if self._pdu_started is not None:
            self._pdu_started = self._quiet_since

    def _send_and_close(self, pdu: bytes) -> None:
        self.machine.closed()
        if not self.writer.is_closing():
            self.writer.write(pdu)
            self.writer.close()


def commands_status(answer: int | Dataset) -> Command:
    """Status (and Error Comment) elements of a handler's answer."""
    if isinstance(answer, int):
        return {"Status": answer}
    elements: Command = {"Status": int(answer.Status)}
    if "ErrorComment" in answer:
        elements["ErrorComment"] = str(answer.ErrorComment)
    return elements


class _Message:
    """A DIMSE request being received: its command, and where its data set goes."""

    def __init__(self, context_id: int, abstract_syntax: str, transfer_syntax: UID, command: Command) -> None:
        self.context_id = context_id
        self.abstract_syntax = abstract_syntax
        self.transfer_syntax = transfer_syntax
        self.command = command
        self.field = int(command["CommandField"])
        self._file: ReceivingFile | None = None
        self._buffer: bytearray | None = bytearray()

    @property
    def service_ok(self) -> bool:
        """Whether the request fits its presentation context's SOP class."""
        if self.field in (commands.C_ECHO_RQ, commands.C_CANCEL_RQ) or self.field & commands.RESPONSE_BIT:
            return True
        if self.field == commands.C_STORE_RQ:
            return self.abstract_syntax not in _NOT_STORAGE
        if self.field == commands.C_FIND_RQ:
            return self.abstract_syntax == _WORKLIST
        if self.field in (commands.N_CREATE_RQ, commands.N_SET_RQ):
            return self.abstract_syntax == _PROCEDURE_STEP
        return True

    def receive_into(self, file: ReceivingFile, header: bytes) -> None:
        self._file, self._buffer = file, None
        file.write(header)

    def take(self, fragment: memoryview) -> None:
        if self._file is not None:
            self._file.write(fragment)
        elif self._buffer is not None:
            if len(self._buffer) + len(fragment) > MAX_IDENTIFIER:
                self._buffer = None  # dropped: answered as undecodable
            else:
                self._buffer += fragment

    def data(self) -> bytes | None:
        """The data set received into memory (None when it was too long)."""
        return None if self._buffer is None else bytes(self._buffer)

    def close_file(self) -> tuple[str, str | None] | None:
        """The received file's path and the SHA-256 of its bytes (None: the request had no data set)."""
        if self._file is None:
            return None
        self._file.close()
        return self._file.name, self._file.sha256

    def discard(self) -> bool:
        """Forget a data set that will not be answered; whether a partial file was removed."""
        self._buffer = None
        if self._file is None:
            return False
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)
        self._file = None
        return True


def _decode_dataset(data: bytes | None, syntax: UID) -> Dataset:
    if data is None:
        raise UndecodableDataset(f"data set longer than {MAX_IDENTIFIER} bytes")
    try:
        dataset = decode(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        for _ in dataset.iterall():  # pydicom decodes lazily: find what is broken now
            pass
    except Exception as exc:  # pydicom raises many types on malformed bytes
        raise UndecodableDataset(f"data set cannot be decoded: {exc}") from None
    return dataset


def _encode_dataset(dataset: Dataset, syntax: UID) -> bytes:
    encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("the answer could not be encoded")
    return encoded
