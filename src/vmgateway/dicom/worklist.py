"""The Modality Worklist SCP: C-FIND (Modality Worklist Information Model – FIND) on the
gateway's own AE and port, answered from the entries Vetmanager scheduled."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom import evt

from vmgateway.store import Store
from vmgateway.store.worklist import scheduled_entries
from vmgateway.worklist.entry import WorklistEntry, worklist_item
from vmgateway.worklist.matching import answer, matches

log = logging.getLogger(__name__)

PENDING, CANCELLED, SUCCESS = 0xFF00, 0xFE00, 0x0000
UNABLE_TO_PROCESS = 0xC001


class WorklistProvider:
    def __init__(self, store: Store, charset: str) -> None:
        self.store = store
        self.charset = charset

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        """pynetdicom's C-FIND handler: one pending answer per matching entry, then success."""
        try:
            query = event.identifier
            with self.store.reading() as conn:
                stored = scheduled_entries(conn, time.time())
        except Exception as exc:  # a query that cannot be read, or the journal: said in the protocol
            log.warning("worklist query failed", extra={"error": str(exc)})
            yield UNABLE_TO_PROCESS, None
            return
        found = 0
        for text in stored:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            item = worklist_item(WorklistEntry.model_validate_json(text), self.charset)
            if matches(query, item):
                found += 1
                yield PENDING, answer(query, item)
        requestor = event.assoc.requestor
        log.info("worklist query", extra={"calling_ae": requestor.ae_title, "address": requestor.address,
                                          "matches": found})
        yield SUCCESS, None
