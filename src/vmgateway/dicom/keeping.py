"""Keeping one received instance, the C-STORE status that says how it went, and the socket
option every association of ours needs.

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

from vmgateway.dicom.metadata import UnreadableInstance, read_instance
from vmgateway.store import JournalError, Outcome, Sender, SpoolFull, Store

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def status(code: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = comment[:64]  # LO: at most 64 characters
    return answer


def no_delay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket. dcmtk and others send each
    small PDU in its own segment; without it our replies wait for delayed ACKs (40 ms each) and
    small instances crawl — whether we accepted the association or asked for it (C-GET)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_instance(store: Store, path: Path | str, sender: Sender) -> int | Dataset:
    """Check and keep the instance pynetdicom streamed to `path`; return the C-STORE status."""
    try:
        instance = read_instance(Path(path))
        receipt = store.put_dicom(Path(path), instance, sender)
    except SpoolFull as exc:
        log.warning("refused instance: disk below watermark", extra={"calling_ae": sender.name, "error": str(exc)})
        return status(OUT_OF_RESOURCES, "gateway disk full, retry later")
    except UnreadableInstance as exc:
        log.warning("refused unreadable instance",
                    extra={"calling_ae": sender.name, "address": sender.address, "error": str(exc)})
        return status(CANNOT_UNDERSTAND, str(exc))
    except (OSError, JournalError, TimeoutError) as exc:
        log.error("could not store instance durably", extra={"calling_ae": sender.name, "error": str(exc)})
        return status(OUT_OF_RESOURCES, "gateway could not store it, retry later")
    if receipt.outcome is not Outcome.STORED:
        log.info("instance received again",
                 extra={"sop_instance_uid": instance.sop_instance_uid, "outcome": receipt.outcome.value,
                        "version": receipt.version, "calling_ae": sender.name})
    return SUCCESS
