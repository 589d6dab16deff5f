"""The asyncio engine of the DICOM receiver (`dicom.engine = "asyncio"`, the default): port 4006
served in the gateway's event loop, one task per connection (vmgateway.dicom.association).

Why not pynetdicom's acceptor, which the gateway used first and keeps for one release
(vmgateway.dicom.receiver): its reactor threads poll — each association's two threads sleep a
millisecond between looks, which cost ~0.6 ms of a small instance's 4.4 ms and burned CPU on every
idle association — and it reads a PDU whole, without deadlines (vmgateway.dicom.guard had to
wrap its socket). Here nothing polls: an idle association is a coroutine waiting on its socket.
Measured side by side in bench/README.md.

Connections are admitted at accept by the port's Admission (allowlist, share per peer, cap);
associations count against `dicom.max_associations` once established, so connections that
never send an A-ASSOCIATE-RQ lock nobody out. While draining, every new association is
rejected (transient, local limit exceeded) until the process exits: the sender retries later.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from vmgateway.admission import Admission, AdmittingListener
from vmgateway.config import DicomConfig
from vmgateway.dicom.association import Association, Services
from vmgateway.dicom.mpps import ProcedureStepProvider
from vmgateway.dicom.negotiation import Policy
from vmgateway.dicom.worklist import WorklistProvider
from vmgateway.store import Store

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5
"""How long a closed connection may take to send what is left (an A-ABORT, a release answer)."""


class AsyncioDicomReceiver:
    def __init__(self, config: DicomConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._services = Services(store, WorklistProvider(store, config.worklist_charset),
                                  ProcedureStepProvider(store))
        self._calling_aets = list(config.allowed_calling_aets)
        self._server: asyncio.Server | None = None
        self._running: dict[asyncio.Task[None], Association] = {}
        self._in_slots: set[Association] = set()
        """Associations established, or being decided with a slot claimed for them."""
        self._draining = False
        # Connections beyond the association limit are still accepted, up to twice as many, so
        # that they can be answered "local limit exceeded" (the sender retries later); more than
        # that are closed at once.
        self._admission = Admission("dicom", lambda _peer: True, config.max_associations_per_peer,
                                    2 * config.max_associations)

    async def start(self) -> None:
        """Listen; raise OSError when the port cannot be bound."""
        cfg = self.config
        listener = AdmittingListener.bound(cfg.bind, cfg.port, self._admission)
        self._server = await asyncio.start_server(self._serve, sock=listener, backlog=128)
        log.info("dicom receiver listening", extra={"bind": cfg.bind, "port": cfg.port, "ae_title": cfg.ae_title,
                                                    "engine": "asyncio"})

    def allow_calling_aets(self, calling_aets: list[str]) -> None:
        """Who may associate from now on (asked at each A-ASSOCIATE-RQ); empty: anyone."""
        self._calling_aets = list(calling_aets)

    def _policy(self) -> Policy:
        cfg = self.config
        return Policy(cfg.ae_title, cfg.require_called_ae, tuple(self._calling_aets), cfg.max_pdu)

    def _claim(self, association: Association) -> bool:
        """A slot for an association being decided, if there is room (none while draining)."""
        if self._draining or len(self._in_slots) >= self.config.max_associations:
            return False
        self._in_slots.add(association)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Each response in its own segment, at once: without it a reply waits for the
            # peer's delayed ACK (40 ms) and small instances crawl.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address = str((writer.get_extra_info("peername") or ("?", 0))[0])
        association = Association(reader, writer, address, self.config, self._services, self._policy, self._claim,
                                  self._in_slots.discard)
        task = asyncio.current_task()
        assert task is not None
        self._running[task] = association
        try:
            await association.run()
        finally:
            del self._running[task]
            self._in_slots.discard(association)
            writer.close()
            try:  # a peer that reads nothing keeps a closing transport open: cut it after a while
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError, OSError):
                writer.transport.abort()

    async def drain(self, timeout: float) -> int:
        """Refuse new associations, let running ones finish within `timeout`, abort the rest.

        Returns how many associations had to be aborted. An aborted sender gets no answer
        for the instance in flight and keeps it: nothing acknowledged is lost. The port stays
        open, answering every newcomer A-ASSOCIATE-RJ (transient), until `close()`.
        """
        self._draining = True
        for task, association in list(self._running.items()):
            if not association.established:
                # A connection that never sent its A-ASSOCIATE-RQ (a port scan, a peer that
                # hung up) would hold the drain for the whole ARTIM time; nothing is in flight.
                association.abort()
                task.cancel()
        running = {task for task, association in self._running.items() if association in self._in_slots}
        log.info("dicom receiver draining", extra={"running_associations": len(running)})
        aborted = 0
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                if (running_association := self._running.get(task)) is not None:
                    running_association.abort()
                task.cancel()
                aborted += 1
            await asyncio.gather(*late, return_exceptions=True)
        log.info("dicom receiver drained", extra={"aborted_associations": aborted})
        return aborted

    async def close(self) -> None:
        """Stop listening and cut whatever is still connected (the last thing before the process
        exits; nothing if never started)."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        for task, association in list(self._running.items()):
            association.abort()
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        log.info("dicom receiver stopped")
