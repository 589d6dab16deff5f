"""How pynetdicom must behave wherever the gateway receives instances through it: the pynetdicom
engine on port 4006 and the PACS poller's C-GET (its acceptor role on our own association).

Process-wide settings (pynetdicom keeps them in a module), so made once and the same for both.
"""

from __future__ import annotations

from pynetdicom import _config

from vmgateway.dicom import receiving
from vmgateway.store import Store


def _any_uid(value: object) -> tuple[bool, str]:
    return True, ""


def configure(store: Store) -> None:
    """Stream received datasets to files in `store`'s incoming folder (vmgateway.dicom.receiving),
    and leave the judging of what arrives to our handlers."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    receiving.install(store)
    # Accept every storage SOP class, private ones (common on ultrasound) included, in the
    # transfer syntax the sender prefers, and send any C-STORE to our handler; otherwise
    # pynetdicom aborts the whole association on an unexpected SOP Class UID.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.LOG_HANDLER_LEVEL = "none"  # per-message logging costs; we log ourselves
    # pynetdicom aborts the association when a C-STORE's own UIDs break the rules (a
    # 200-character SOP Instance UID): let it through to the handler, which refuses the
    # instance with 0xC000 and the reason (vmgateway.dicom.metadata checks every UID kept).
    _config.VALIDATORS["UI"] = _any_uid
