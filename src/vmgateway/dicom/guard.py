"""What one connection to port 4006 may cost: bytes per PDU, time per PDU, connections per peer.

pynetdicom reads a PDU whole into memory, as long as its header says, and waits for it without a
deadline. Measured before this guard: a header announcing 0xFFFFFFFF bytes (no association
needed) grew the gateway from 83 to 1,578 MB for 1.5 GB streamed — past the unit's MemoryMax;
11 connections trickling an A-ASSOCIATE-RQ at a byte every 5 s held every association slot for
good, whatever the timeouts, since pynetdicom checks its ARTIM timer only between PDUs. And it
waited with select(), which cannot watch descriptor 1024 or above: past that, every new
association was aborted.

So, on every acceptor connection:
- a PDU longer than we allow is refused from its header — A-ABORT, socket closed, nothing read:
  before the association, longer than any sane A-ASSOCIATE-RQ; after it, a P-DATA-TF longer than
  the maximum we announced (PS3.8 9.3.1: the peer must not send more);
- the A-ASSOCIATE-RQ must arrive whole within the ARTIM time (`dicom.acse_timeout_s`) of the
  connection; after that every PDU must arrive whole within `dicom.network_timeout_s` of its first
  byte — a trickle counts as idle;
- readiness is asked with poll();
- the connection is admitted at accept by the port's Admission (allowlist, share per peer, cap).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from typing import Any

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from vmgateway.admission import Admission
from vmgateway.logs import SayingSparingly

log = SayingSparingly(logging.getLogger(__name__))

MAX_ASSOCIATE_PDU = 256 * 1024
"""Longest PDU accepted other than a P-DATA-TF of an established association. An A-ASSOCIATE-RQ
proposing all 128 presentation contexts, each with ten transfer syntaxes, is under 40 KB."""

_P_DATA_TF = 0x04
_A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])
"""A-ABORT PDU: source 2 (service provider), reason 6 (invalid PDU parameter value)."""
_READ_SIZE = 65536


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket wrapper with a size limit and a deadline on every PDU it reads."""

    _opened: float
    _pdu_deadline: float | None
    _body_length: int | None

    @classmethod
    def take_over(cls, wrapper: AssociationSocket) -> GuardedSocket:
        """Guard the wrapper pynetdicom made for an accepted connection. Done by changing its
        class, because pynetdicom makes it (and queues the connection's first event) inside
        RequestHandler._create_association, with no hook for another class."""
        wrapper.__class__ = cls
        guarded: GuardedSocket = wrapper  # type: ignore[assignment]
        guarded._opened = time.monotonic()
        guarded._pdu_deadline = None
        guarded._body_length = None
        return guarded

    @property
    def ready(self) -> bool:
        if self.socket is None or self._is_connected is False:
            return False
        try:
            poller = select.poll()
            poller.register(self.socket, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # Evt17: transport connection closed
            return False

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom reads a PDU as recv(6) for its header, then recv(length) for the rest."""
        if self._body_length is None:
            return self._read_header(nr_bytes)
        self._body_length = None
        return self._read(nr_bytes)

    def _read_header(self, nr_bytes: int) -> bytearray:
        if self.assoc.is_established:
            self._pdu_deadline = time.monotonic() + float(self.assoc.network_timeout or 60)
        else:
            self._pdu_deadline = self._opened + float(self.assoc.acse_timeout or 30)
        header = self._read(nr_bytes)
        if len(header) < 6:
            return header  # pynetdicom treats a short header as the connection closed
        pdu_type, _, length = struct.unpack(">BBL", header[:6])
        allowed = self._allowed_length(pdu_type)
        if length > allowed:
            self._refuse("dicom PDU refused: longer than allowed", pdu_type=pdu_type, length=length, allowed=allowed)
            return bytearray()
        self._body_length = length
        return header

    def _allowed_length(self, pdu_type: int) -> int:
        if pdu_type == _P_DATA_TF and self.assoc.is_established:
            return int(self.assoc.acceptor.maximum_length or MAX_ASSOCIATE_PDU)
        return MAX_ASSOCIATE_PDU

    def _read(self, nr_bytes: int) -> bytearray:
        """Up to `nr_bytes`, fewer when the peer closes or the PDU's deadline passes (then the
        connection is cut)."""
        assert self.socket is not None and self._pdu_deadline is not None
        received = bytearray()
        while len(received) < nr_bytes:
            left = self._pdu_deadline - time.monotonic()
            if left <= 0:
                self._refuse("dicom connection cut: a PDU did not arrive in time", received=len(received))
                return received
            self.socket.settimeout(left)
            try:
                chunk = self.socket.recv(min(_READ_SIZE, nr_bytes - len(received)))
            except TimeoutError:
                continue  # the deadline check above cuts it
            finally:
                if self.socket is not None:
                    self.socket.settimeout(None)
            if not chunk:
                return received
            received += chunk
        return received

    def _refuse(self, message: str, **details: Any) -> None:
        """A-ABORT (best effort) and close: pynetdicom then sees the connection closed."""
        assert self.socket is not None
        log.warning(message, address=self.assoc.requestor.address, **details)
        try:
            self.socket.settimeout(1)
            self.socket.send(_A_ABORT_INVALID_PARAMETER)
        except OSError:
            pass
        self._shutdown_socket()


class _GuardedRequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        association = super()._create_association()
        assert association.dul.socket is not None
        association.dul.socket = GuardedSocket.take_over(association.dul.socket)
        return association


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's association server, admitting connections by `admission` at accept."""

    request_queue_size = 128
    """The listen backlog (socketserver's default is 5: in a burst of connections the kernel
    dropped the rest, and each such sender waited a second or more to try again)."""

    def __init__(self, *args: Any, admission: Admission, **kwargs: Any) -> None:
        self.admission = admission
        kwargs["request_handler"] = _GuardedRequestHandler
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        assert isinstance(request, socket.socket)
        return self.admission.admit(str(client_address[0]), request)
