"""Keeping one received instance, and the socket option every association of ours needs.

Shared by the Storage SCP (instances pushed to us) and the PACS poller's C-GET (instances we
fetched): the same checks, the same store, the same invariant — Success only once the file and
its journal row are durable.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import evt

from vmgateway.counters import DICOM_STORE_RESPONSES
from vmgateway.dicom import receiving
from vmgateway.dicom.metadata import read_instance
from vmgateway.dicom.statuses import SUCCESS, Service, answering
from vmgateway.model import Kept, Sender
from vmgateway.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

def no_delay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket. dcmtk and others send each
    small PDU in its own segment; without it our replies wait for delayed ACKs (40 ms each) and
    small instances crawl — whether we accepted the association or asked for it (C-GET)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_instance(store: Store, path: Path | str, sender: Sender, sha256: str | None = None) -> int:
    """Check and keep the instance streamed to `path` (`sha256`: its hash, when taken on the way);
    Success once it is durable.

    Raises what stops that (UnreadableInstance, StoreUnavailable, …): the handler's
    seam (vmgateway.dicom.statuses) turns it into the status the sender is told.
    """
    refused = receiving.refusal(path)
    if refused is not None:
        raise refused
    fsynced = store.fsync_soon(Path(path))
    instance = read_instance(Path(path))  # while the disk writes it
    receipt = store.put_dicom(Path(path), instance, sender, fsynced, sha256)
    if receipt.kept is not Kept.STORED:
        log.info("instance received again",
                 extra={"sop_instance_uid": instance.sop_instance_uid, "outcome": receipt.kept.value,
                        "version": receipt.version, "calling_ae": sender.name})
    return SUCCESS


def note_echo(store: Store, sender: Sender) -> None:
    """A C-ECHO is answered Success whatever happens here; its caller is noted as seen, so that
    Vetmanager can watch a clinic's modality send its test echo."""
    try:
        store.record_contact(sender)
    except (StoreUnavailable, TimeoutError) as exc:
        log.warning("could not note the echo's caller", extra={"error": str(exc)})


def answer_store(store: Store, sender: Sender, path: Path | str, sha256: str | None = None) -> int | Dataset:
    """The C-STORE response for the instance at `path`, sent to us on port 4006 (either engine):
    Success once it is kept, else the status the seam chose; counted by status."""
    answer = _keep(store, sender, path, sha256)
    status = answer if isinstance(answer, int) else int(answer.Status)
    DICOM_STORE_RESPONSES.labels(f"0x{status:04X}").inc()
    return answer


@answering(Service.STORE)
def _keep(store: Store, sender: Sender, path: Path | str, sha256: str | None) -> int:
    return keep_instance(store, path, sender, sha256)
