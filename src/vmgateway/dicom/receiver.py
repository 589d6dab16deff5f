"""The pynetdicom engine of the DICOM receiver (`dicom.engine = "pynetdicom"`): Verification,
Storage, Modality Worklist and MPPS SCP on the gateway's port (4006). Kept beside the asyncio
engine (vmgateway.dicom.acceptor) for one release, as the way back should it misbehave.

Built on pynetdicom's event handlers. Each association runs in its own pynetdicom thread
and calls the store directly; the C-STORE response is sent when the handler returns, so
returning Success only after `Store.put_dicom` returned *is* the invariant.

Incoming datasets are streamed to a file by pynetdicom (chunked receive), never held in
memory; that file is created in the store's `incoming/` folder so that keeping it is a rename.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from vmgateway.admission import Admission
from vmgateway.config import DicomConfig
from vmgateway.dicom.guard import GuardedServer
from vmgateway.dicom.keeping import answer_store, no_delay, note_echo
from vmgateway.dicom.mpps import ProcedureStepProvider
from vmgateway.dicom.negotiation import supported_contexts
from vmgateway.dicom.pynetdicom_setup import configure
from vmgateway.dicom.rejection import describe_rejection
from vmgateway.dicom.statuses import SUCCESS
from vmgateway.dicom.worklist import WorklistProvider
from vmgateway.model import Sender
from vmgateway.store import Store

log = logging.getLogger(__name__)


def _sender(event: evt.Event) -> Sender:
    requestor = event.assoc.requestor
    return Sender("dicom", requestor.ae_title, requestor.address)


class GatewayAE(AE):
    """An AE whose association limit counts established associations only, and that can refuse
    every new association while it drains.

    pynetdicom rejects an association (transient, "local limit exceeded") when more acceptor
    threads are alive than `maximum_associations` — connections still waiting for their
    A-ASSOCIATE-RQ included, so ten idle connections locked out every modality. Asked from the
    association deciding (its own thread), the limit reported here is raised by the number of
    other connections not yet associated: only established ones count. Reporting -1 while
    draining turns the check into "no new associations", so senders are told to retry later
    rather than finding a closed port.
    """

    draining = False

    @property
    def maximum_associations(self) -> int:
        if self.draining:
            return -1
        deciding = threading.current_thread()
        waiting = sum(1 for a in self.active_associations
                      if a.is_acceptor and not a.is_established and a is not deciding)
        return self._maximum_associations + waiting

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        self._maximum_associations = value


class PynetdicomReceiver:
    def __init__(self, config: DicomConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.ae = GatewayAE(ae_title=config.ae_title)
        self._server: ThreadedAssociationServer | None = None

    async def start(self) -> None:
        """Listen; raise OSError when the port cannot be bound. pynetdicom's server threads:
        starting them does not block."""
        configure(self.store)

        ae, cfg = self.ae, self.config
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        ae.require_called_aet = cfg.require_called_ae
        self.allow_calling_aets(cfg.allowed_calling_aets)
        ae.supported_contexts = supported_contexts()
        worklist = WorklistProvider(self.store, cfg.worklist_charset)
        steps = ProcedureStepProvider(self.store)

        def on_find(event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
            return worklist.find(_sender(event), lambda: event.identifier, lambda: bool(event.is_cancelled))

        def on_create(event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
            uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            return steps.create(_sender(event), uid, lambda: event.attribute_list)

        def on_set(event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
            uid = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "")
            return steps.update(_sender(event), uid, lambda: event.attribute_list)

        handlers: list[Any] = [
            (evt.EVT_C_FIND, on_find),
            (evt.EVT_N_CREATE, on_create),
            (evt.EVT_N_SET, on_set),
            (evt.EVT_CONN_OPEN, no_delay),
            (evt.EVT_C_ECHO, self._on_c_echo),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        # Connections beyond the association limit are still accepted, up to twice as many, so
        # that pynetdicom can answer them "local limit exceeded" (the sender retries later);
        # more than that are closed at once.
        admission = Admission("dicom", lambda _peer: True, cfg.max_associations_per_peer, 2 * cfg.max_associations)
        server = ae.make_server((cfg.bind, cfg.port), evt_handlers=handlers, server_class=GuardedServer,
                                admission=admission)
        threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True).start()
        ae._servers.append(server)  # as ae.start_server() does: server.shutdown() removes it from there
        self._server = server
        log.info("dicom receiver listening", extra={"bind": cfg.bind, "port": cfg.port, "ae_title": cfg.ae_title})

    def allow_calling_aets(self, calling_aets: list[str]) -> None:
        """Who may associate from now on (pynetdicom asks at each A-ASSOCIATE-RQ); empty: anyone."""
        self.ae.require_calling_aet = list(calling_aets)

    async def drain(self, timeout: float) -> int:
        """As `drain_now`, in a worker thread (it waits for pynetdicom's threads)."""
        return await asyncio.to_thread(self.drain_now, timeout)

    def drain_now(self, timeout: float) -> int:
        """Refuse new associations, let running ones finish within `timeout`, abort the rest.

        Returns how many associations had to be aborted. An aborted sender gets no answer
        for the instance in flight and keeps it: nothing acknowledged is lost. The port stays
        open, answering every newcomer A-ASSOCIATE-RJ (transient), until `close()`: a modality
        that finds the port closed instead may report an error rather than retry later.
        """
        self.ae.draining = True
        deadline = time.monotonic() + timeout
        accepted = [a for a in self.ae.active_associations if a.is_acceptor]
        for association in accepted:
            if not association.is_established:
                # A connection that never sent its A-ASSOCIATE-RQ (a port scan, a peer that
                # hung up) would hold the drain for the whole ACSE timeout; nothing is in flight.
                association.abort()
        running = [a for a in accepted if a.is_established]
        log.info("dicom receiver draining", extra={"running_associations": len(running)})
        for association in running:
            association.join(max(0.0, deadline - time.monotonic()))
        aborted = 0
        for association in running:
            if association.is_alive():
                association.abort()
                aborted += 1
        log.info("dicom receiver drained", extra={"aborted_associations": aborted})
        return aborted

    async def close(self) -> None:
        """Stop listening (the last thing before the process exits; nothing if never started)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        self.ae.shutdown()
        log.info("dicom receiver stopped")

    # --- event handlers (run in pynetdicom's association threads) ---

    def _on_c_echo(self, event: evt.Event) -> int:
        note_echo(self.store, _sender(event))
        return SUCCESS

    def _on_c_store(self, event: evt.Event) -> int | Dataset:
        return answer_store(self.store, _sender(event), event.dataset_path)

    @staticmethod
    def _on_established(event: evt.Event) -> None:
        requestor = event.assoc.requestor
        log.info("association accepted", extra={"calling_ae": requestor.ae_title, "address": requestor.address})

    @staticmethod
    def _on_rejected(event: evt.Event) -> None:
        requestor = event.assoc.requestor
        log.warning(
            "association rejected",
            extra={
                "calling_ae": requestor.ae_title,
                "called_ae": requestor.primitive.called_ae_title if requestor.primitive else None,
                "address": requestor.address,
                "reason": describe_rejection(event.assoc.acceptor.primitive),
            },
        )

    @staticmethod
    def _on_aborted(event: evt.Event) -> None:
        requestor = event.assoc.requestor
        log.warning("association aborted", extra={"calling_ae": requestor.ae_title, "address": requestor.address})
