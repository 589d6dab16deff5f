"""The Modality Worklist SCP: C-FIND (Modality Worklist Information Model – FIND) on the
gateway's own AE and port, answered from the entries Vetmanager scheduled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset

from vmgateway.dicom.statuses import CANCELLED, PENDING, SUCCESS, Service, answering_each
from vmgateway.model import Sender
from vmgateway.store import Store
from vmgateway.worklist.entry import entry_from_json, worklist_item
from vmgateway.worklist.matching import answer, matches

log = logging.getLogger(__name__)


class WorklistProvider:
    def __init__(self, store: Store, charset: str) -> None:
        self.store = store
        self.charset = charset

    @answering_each(Service.FIND)
    def find(self, sender: Sender, read_query: Callable[[], Dataset], cancelled: Callable[[], bool],
             ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """C-FIND: one pending answer per matching entry, then success; `cancelled` tells of a
        C-CANCEL. The query is read (decoded) here, inside the seam: a query that cannot be read
        ends in 0xA900, a journal that cannot be in 0xC001."""
        query = read_query()
        stored = self.store.worklist.scheduled()
        found = 0
        for text in stored:
            if cancelled():
                yield CANCELLED, None
                return
            item = worklist_item(entry_from_json(text), self.charset)
            if matches(query, item):
                found += 1
                yield PENDING, answer(query, item)
        log.info("worklist query", extra={"calling_ae": sender.name, "address": sender.address, "matches": found})
        yield SUCCESS, None
