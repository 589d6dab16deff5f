"""The HL7 receiver: an asyncio MLLP server on the gateway's port 2575.

Per frame: read the MSH (nothing more), keep the raw bytes in the store, answer. The ACK
says `AA` (or `CA` in enhanced mode) only after the store returned, i.e. after the journal's
commit was fsync'ed. The full parse for the journal's metadata runs after the ACK is sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from functools import partial
from ipaddress import IPv4Network, IPv6Network

from vmgateway.admission import Admission, AdmittingListener
from vmgateway.config import Hl7Config
from vmgateway.connections import Connections, peer_allowed
from vmgateway.counters import HL7_ACKS
from vmgateway.hl7.framing import Frame, Garbage, MllpDecoder, Oversized, framed
from vmgateway.hl7.messages import Header, UnusableHeader, build_ack, read_details, read_header
from vmgateway.model import Kept, Sender
from vmgateway.store import SpoolFull, Store, StoreUnavailable

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_DETAILS_BATCH = 64
_DETAILS_DELAY_S = 0.5
# Error codes, HL7 table 0357
_APPLICATION_ERROR = "207"
_UNSUPPORTED_MESSAGE = "200"


def _codes(header: Header | None) -> tuple[str, str, str]:
    """(accept, error, reject) codes: commit ACK codes in enhanced mode, else original mode."""
    if header is not None and header.enhanced_mode:
        return "CA", "CE", "CR"
    return "AA", "AE", "AR"


def _reply(header: Header | None, code: str, text: str = "", error_code: str = "") -> bytes:
    """Every ACK the receiver sends is built here, and counted by its MSA-1 code."""
    HL7_ACKS.labels(code).inc()
    return build_ack(header, code, text, error_code)


class Hl7Receiver:
    def __init__(self, config: Hl7Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._server: asyncio.Server | None = None
        self._connections = Connections()
        self._background: set[asyncio.Task[None]] = set()
        self._unread: list[tuple[int, bytes | bytearray, Header]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._admission = Admission("hl7", partial(peer_allowed, allowed=config.allowed_peers),
                                    config.max_connections_per_peer, config.max_connections)

    def allow_peers(self, peers: list[IPv4Network | IPv6Network]) -> None:
        """Who may connect from now on (asked at each accept); open connections carry on."""
        self._admission.allowed = partial(peer_allowed, allowed=peers)

    async def start(self) -> None:
        """Listen; raise OSError when the port cannot be bound."""
        cfg = self.config
        listener = AdmittingListener.bound(cfg.bind, cfg.port, self._admission)
        self._server = await asyncio.start_server(self._serve, sock=listener)
        log.info("hl7 receiver listening", extra={"bind": self.config.bind, "port": self.config.port})
        for item_id, raw in await self.store.hl7_without_details():
            self._read_details_later(item_id, raw, read_header(raw))

    async def drain(self, timeout: float) -> None:
        """Refuse new connections; give open ones `timeout` to finish, then close them.

        A message cut off by the close is not acknowledged and the sender keeps it. If its
        commit was already under way, the resent copy is recognised and answered AA.
        """
        if self._server is not None:
            self._server.close()
        await self._connections.drain(timeout)
        self._read_unread()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("hl7 receiver stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One admitted connection (the listener turned away the others: allowlist, shares)."""
        address = str((writer.get_extra_info("peername") or ("?", 0))[0])
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._connections.serve(writer, self._converse(reader, writer, address))

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        decoder = MllpDecoder(self.config.max_message_bytes)
        frame_deadline: float | None = None  # while in a frame: when it must be whole
        while True:
            waiting = self.config.idle_timeout_s
            if frame_deadline is not None:
                waiting = min(waiting, frame_deadline - time.monotonic())
            try:
                async with asyncio.timeout(waiting):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                if frame_deadline is not None and time.monotonic() >= frame_deadline:
                    log.warning("hl7 frame not finished in time, connection closed",
                                extra={"address": address, "frame_timeout_s": self.config.frame_timeout_s})
                else:
                    log.info("hl7 connection idle, closed", extra={"address": address, "half_frame": decoder.in_frame})
                return
            if not data:
                return
            for event in decoder.feed(data):
                if isinstance(event, Frame):
                    ack, keep_open = await self._answer(event.payload, address)
                elif isinstance(event, Oversized):
                    ack, keep_open = self._refuse_oversized(event, address), False
                else:
                    assert isinstance(event, Garbage)
                    log.warning("hl7 connection sent bytes outside MLLP frames, closed",
                                extra={"address": address, "sample": event.sample[:32].hex()})
                    return
                if ack is not None:
                    writer.write(framed(ack))
                    await writer.drain()
                if not keep_open:
                    return
                frame_deadline = None  # a frame ended: the next one gets its own time
            if decoder.in_frame and frame_deadline is None:
                frame_deadline = time.monotonic() + self.config.frame_timeout_s
            elif not decoder.in_frame:
                frame_deadline = None

    async def _answer(self, raw: bytearray, address: str) -> tuple[bytes | None, bool]:
        """The ACK for one frame (None when enhanced mode asks for none), and whether the
        connection stays open."""
        try:
            header = read_header(raw)
        except UnusableHeader as exc:
            log.warning("hl7 message refused", extra={"address": address, "reason": str(exc), "size": len(raw)})
            is_hl7 = bytes(raw[:64]).lstrip(b"\r\n\x00 \t").startswith(b"MSH")
            return _reply(None, "AR", str(exc), _UNSUPPORTED_MESSAGE), is_hl7
        accept, error, _ = _codes(header)
        sender = Sender("hl7", f"{header.sending_application}^{header.sending_facility}", address)
        try:
            receipt = await asyncio.wrap_future(self.store.submit_hl7(raw, header, sender))
        except StoreUnavailable as exc:  # the one way the store says "not now": the sender keeps it
            level = logging.WARNING if isinstance(exc, SpoolFull) else logging.ERROR
            log.log(level, "hl7 message not stored: retry later", extra={"address": address, "error": str(exc)})
            return self._ack(header, error, f"{exc.said}, retry later", _APPLICATION_ERROR), True
        if receipt.kept is Kept.DUPLICATE:
            log.info("hl7 message received again", extra={"control_id": header.control_id, "address": address})
        else:
            self._read_details_later(receipt.item_id, raw, header)
        return self._ack(header, accept), True

    @staticmethod
    def _ack(header: Header, code: str, text: str = "", error_code: str = "") -> bytes | None:
        """Honour MSH-15 in enhanced mode: NE never, ER only on errors, SU only on success."""
        wanted = header.accept_ack_type
        if header.enhanced_mode and (
            wanted == "NE" or (wanted == "ER" and code == "CA") or (wanted == "SU" and code != "CA")
        ):
            return None
        return _reply(header, code, text, error_code)

    def _refuse_oversized(self, event: Oversized, address: str) -> bytes | None:
        limit = self.config.max_message_bytes
        log.warning("hl7 message refused: too large", extra={"address": address, "size": event.size, "limit": limit})
        try:
            header = read_header(event.head)
        except UnusableHeader:
            return None
        _, _, reject = _codes(header)
        return _reply(header, reject, f"message of {event.size} bytes exceeds the limit of {limit}", "203")

    def _read_details_later(self, item_id: int, raw: bytes | bytearray, header: Header) -> None:
        """Queue a stored message for its full parse. Parses run in batches off the event
        loop, and their results are committed together: nothing of it delays an ACK."""
        self._unread.append((item_id, raw, header))
        if len(self._unread) >= _DETAILS_BATCH:
            self._read_unread()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(_DETAILS_DELAY_S, self._read_unread)

    def _read_unread(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._unread = self._unread, []
        if batch:
            task = asyncio.create_task(asyncio.to_thread(self._read_and_record, batch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _read_and_record(self, batch: list[tuple[int, bytes | bytearray, Header]]) -> None:
        found = []
        for item_id, raw, header in batch:
            try:
                override = self.config.charset_overrides.get(header.sending_application)
                found.append((item_id, read_details(raw, header, override)))
            except Exception as exc:  # a message python-hl7 cannot read is still kept, raw
                log.warning("hl7 message details unreadable", extra={"item_id": item_id, "error": str(exc)})
        try:
            self.store.add_hl7_details(found)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("hl7 message details not recorded; read again at next start", extra={"error": str(exc)})
