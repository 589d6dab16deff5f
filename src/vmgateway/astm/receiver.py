"""ASTM instruments over TCP (one asyncio server per configured listener) and on serial ports,
E1381 on each line (astm/link.py), a message's final frame ACKed only once the journal has it."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import serial

from vmgateway.admission import Admission, AdmittingListener
from vmgateway.astm.host_query import HostQuery, answer_records, read_query
from vmgateway.astm.lines import Line, SerialLine, TcpLine
from vmgateway.astm.link import ACK, ENQ, EOT, NAK, LinkReceiver, Message, Problem, Reply, frames
from vmgateway.astm.records import parse, summarise
from vmgateway.config import AstmConfig, AstmListener, AstmSerialPort
from vmgateway.connections import Connections, peer_allowed
from vmgateway.jobs import Jobs
from vmgateway.lab.order import LabOrder
from vmgateway.lab.orders import LabDesk
from vmgateway.model import Sender
from vmgateway.store import SpoolFull, Store, StoreUnavailable

log = logging.getLogger(__name__)
SERIAL_RETRY_S = 5
_SAMPLES_LOGGED = 5
"""Sample ids named in a log line about a query (its counts say the rest)."""
ANSWER_TIMEOUT_S = 15
"""E1381: how long the gateway, sending, waits for each reply of the analyzer."""

class AstmReceiver:
    def __init__(self, config: AstmConfig, store: Store, lab: LabDesk, jobs: Jobs) -> None:
        self.config = config
        self.store = store
        self.lab = lab
        self.jobs = jobs
        self._servers: list[asyncio.Server] = []
        self._connections = Connections()
        self._opened: dict[str, SerialLine | None] = {}
        """Each serial port as start() opened it, for the first run of its job."""

    async def start(self) -> None:
        """Listen on every configured TCP port (OSError when one cannot be bound) and keep every
        serial port open."""
        for listener in self.config.listeners:
            admission = Admission(f"astm {listener.name}", partial(peer_allowed, allowed=listener.allowed_peers),
                                  self.config.max_connections_per_peer, self.config.max_connections)
            server = await asyncio.start_server(
                partial(self._serve, listener), sock=AdmittingListener.bound(listener.bind, listener.port, admission))
            self._servers.append(server)
            log.info("astm listener listening", extra={"listener": listener.name, "bind": listener.bind,
                                                        "port": listener.port})
        for port in self.config.serial:
            # Opened here, before the gateway says it runs: pyserial flushes what arrived before the
            # port was open, and an instrument that starts at once must not lose its first ENQ.
            self._opened[port.name] = self._open(port)
            self.jobs.run(self.serial_job(port), partial(self._keep_open, port))

    @staticmethod
    def serial_job(port: AstmSerialPort) -> str:
        """The name of the job that keeps a serial port's conversation going (status: `job:astm:NAME`)."""
        return f"astm:{port.name}"

    def _open(self, port: AstmSerialPort, say_failure: bool = True) -> SerialLine | None:
        try:
            line = SerialLine(port)
        except (serial.SerialException, ValueError, OSError) as exc:
            if say_failure:
                log.error("astm serial port cannot be opened; trying again", extra={
                    "listener": port.name, "device": port.device, "error": str(exc), "every_s": SERIAL_RETRY_S})
            return None
        log.info("astm serial port open", extra={"listener": port.name, "device": port.device,
                                                  "baudrate": port.baudrate})
        return line

    async def _keep_open(self, port: AstmSerialPort) -> None:
        """E1381 on a serial port for as long as the gateway runs, as a job (vmgateway.jobs): what
        ends it unexpectedly (a journal error) is shown and it is started again. A port that cannot
        be opened (a USB adapter unplugged, or not there yet at boot) is tried again every
        SERIAL_RETRY_S, and said once: one missing instrument must not keep DICOM and HL7 from
        starting, nor stop them in a restart loop."""
        sender = Sender("astm", port.name, port.device)
        first = port.name in self._opened
        line = self._opened.pop(port.name, None)
        said = first and line is None  # start() has said it
        while True:
            if line is None:
                await asyncio.sleep(SERIAL_RETRY_S)
                line, said = self._open(port, say_failure=not said), True
                continue
            said = False
            try:
                await self._converse(port.name, line, sender, idle_s=None)
            finally:
                line.close()
            log.warning("astm serial port gone; opening it again", extra={"listener": port.name,
                                                                          "device": port.device})
            line = None

    async def drain(self, timeout: float) -> None:
        """No new connections; transfers under way get `timeout`, then are cut (an unfinished
        message was never ACKed: the instrument sends it again). The serial ports' jobs are the
        service's to finish, as every job's."""
        for server in self._servers:
            server.close()
        await self._connections.drain(timeout)
        for server in self._servers:
            await server.wait_closed()
        log.info("astm listeners stopped")

    async def _serve(self, listener: AstmListener, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """One admitted connection (the listener turned away the others: allowlist, shares)."""
        address = str((writer.get_extra_info("peername") or ("?", 0))[0])
        line = TcpLine(reader, writer)
        sender = Sender("astm", listener.name, address)
        await self._connections.serve(writer, self._converse(listener.name, line, sender, self.config.idle_timeout_s))

    async def _converse(self, name: str, line: Line, sender: Sender, idle_s: float | None) -> None:
        """E1381 on one line until it is gone (TCP: also after `idle_s` without a transfer; a
        serial port stays open: `idle_s` None). During a transfer each frame must come within
        `astm.frame_timeout_s`; then the unfinished message is dropped. Time counts from the last
        thing the link did (a frame, an ENQ, an EOT), not from the last byte: a trickle is silence."""
        link = LinkReceiver()
        progress_at = time.monotonic()
        due: list[list[bytes]] = []
        """Answers to host queries, sent once the analyzer has ended its transmission (EOT)."""
        while True:
            if due and not link.in_transfer:
                await self._transmit(line, due.pop(0), sender)
                progress_at = time.monotonic()
                continue
            limit = self.config.frame_timeout_s if link.in_transfer else idle_s
            waiting = None if limit is None else progress_at + limit - time.monotonic()
            try:
                async with asyncio.timeout(waiting):
                    data = await line.read()
            except TimeoutError:
                if not link.in_transfer:
                    log.info("astm connection idle, closed", extra={"listener": name})
                    return
                await self._handle(link.end_of_transmission(), link, line, sender, due)
                log.warning("astm sender silent mid-transfer", extra={"listener": name, "address": sender.address})
                progress_at = time.monotonic()
                continue
            if not data:
                await self._handle(link.end_of_transmission(), link, line, sender, due)
                return
            link.busy = not self._room()
            events = link.feed(data)
            if events:
                progress_at = time.monotonic()
            await self._handle(events, link, line, sender, due)

    def _room(self) -> bool:
        try:
            self.store.check_room()
        except SpoolFull:
            return False
        return True

    async def _handle(self, events: list[Reply | Message | Problem], link: LinkReceiver, line: Line,
                      sender: Sender, due: list[list[bytes]]) -> None:
        for event in events:
            if isinstance(event, Reply):
                await line.write(event.data)
            elif isinstance(event, Problem):
                log.warning("astm link problem", extra={"listener": sender.name, "address": sender.address,
                                                         "problem": event.text})
            else:
                query = read_query(event.raw)
                if query is None:
                    stored = await self._keep(event.raw, sender)
                else:  # a host query: nothing to keep; answered once the analyzer's transmission ends
                    answer = await self._answer(query, sender)
                    due += [answer] if answer is not None else []
                    stored = True
                await self._handle(link.answered(stored), link, line, sender, due)

    async def _answer(self, query: HostQuery, sender: Sender) -> list[bytes] | None:
        """The records that answer a host query: each sample's pending lab order (the order id is the
        sample id), or no information. None when the journal cannot say: no answer is better than
        a wrong "no order" (the analyzer asks again)."""
        found: list[tuple[str, LabOrder | None]] = []
        try:
            for sample in query.samples:
                found.append((sample, await self.lab.pending(sample)))
        except StoreUnavailable as exc:
            log.warning("astm host query not answered: the journal cannot be read",
                        extra={"listener": sender.name, "samples": query.samples[:_SAMPLES_LOGGED],
                               "queried": query.queried, "error": str(exc)})
            return None
        ordered = [sample for sample, order in found if order]
        log.info("astm host query", extra={
            "listener": sender.name, "queried": query.queried, "looked_up": len(query.samples),
            "samples": query.samples[:_SAMPLES_LOGGED], "found": ordered[:_SAMPLES_LOGGED], "orders": len(ordered)})
        if query.queried > len(query.samples):
            log.warning("astm host query larger than is answered: the rest answered as unknown",
                        extra={"listener": sender.name, "queried": query.queried, "answered": len(query.samples)})
        return answer_records(found, time.strftime("%Y%m%d%H%M%S"))

    async def _transmit(self, line: Line, records: list[bytes], sender: Sender) -> None:
        """E1381's sending side, for a host query's answer: ENQ, each frame until ACKed (a NAK: the
        same frame again, at most six times), EOT. Refused, interrupted or unanswered within
        ANSWER_TIMEOUT_S: given up (the analyzer asks again)."""
        await line.write(ENQ)
        if await self._reply(line) != ACK:
            log.warning("astm host query answer not taken", extra={"listener": sender.name, "step": "establishment"})
            return
        for frame in frames(records):
            for _ in range(6):
                await line.write(frame)
                reply = await self._reply(line)
                if reply != NAK:
                    break
            if reply != ACK:
                log.warning("astm host query answer not taken", extra={"listener": sender.name, "step": "frame"})
                break
        await line.write(EOT)

    @staticmethod
    async def _reply(line: Line) -> bytes | None:
        """The analyzer's next ACK, NAK, EOT or ENQ; None when none came in time."""
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                while data := await line.read():
                    for byte in data:
                        if bytes([byte]) in (ACK, NAK, EOT, ENQ):
                            return bytes([byte])
        except TimeoutError:
            return None
        return None

    async def _keep(self, raw: bytes, sender: Sender) -> bool:
        """True once the message is committed; False (its final frame NAKed, the instrument
        tries again) when it cannot be."""
        try:
            summary = summarise(parse(raw))
            receipt = await asyncio.wrap_future(self.store.submit_astm(raw, summary, sender))
        except StoreUnavailable as exc:  # the one way the store says "not now": the instrument tries again
            log.warning("astm message not kept", extra={"listener": sender.name, "error": str(exc)})
            return False
        log.info("astm message kept", extra={"listener": sender.name, "item_id": receipt.item_id,
                                             "outcome": receipt.kept.value, "results": summary.result_count,
                                             "samples": summary.sample_ids})
        return True
