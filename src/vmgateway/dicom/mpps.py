"""Modality Performed Procedure Step SCP (N-CREATE, N-SET): a modality reports that an
examination from the worklist started, was completed, or was discontinued.

The answer comes only after the journal has the step (the same promise as for images). A step
is tied to its worklist entry by the Accession Number (or Study Instance UID) of its Scheduled
Step Attributes; a step for no known entry is kept all the same.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from pydicom.dataset import Dataset
from pynetdicom import evt

from vmgateway.store import JournalError, Store
from vmgateway.store.worklist import create_step, set_step, step_attributes

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")
WRITE_TIMEOUT_S = 30


def _scheduled(attributes: Dataset) -> tuple[str | None, str | None]:
    """(Accession Number, Study Instance UID) of the first Scheduled Step Attributes item."""
    steps = attributes.get("ScheduledStepAttributesSequence") or []
    if not steps:
        return None, None
    return (str(steps[0].get("AccessionNumber", "") or "") or None,
            str(steps[0].get("StudyInstanceUID", "") or "") or None)


class ProcedureStepProvider:
    def __init__(self, store: Store) -> None:
        self.store = store

    def on_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = getattr(event.request, "AffectedSOPInstanceUID", None)  # an N-CREATE request
        attributes = event.attribute_list
        if not uid:
            return MISSING_ATTRIBUTE, None  # we do not make UIDs for modalities: they must name the step
        if attributes.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            return INVALID_ATTRIBUTE_VALUE, None  # PS3.4 F.7.2.1: a step is created IN PROGRESS
        accession, study = _scheduled(attributes)
        try:
            order_id = self.store.journal.write(
                create_step(str(uid), accession, study, attributes.to_json(), event.assoc.requestor.ae_title,
                            time.time()), WRITE_TIMEOUT_S)
        except sqlite3.IntegrityError:
            return DUPLICATE_INSTANCE, None
        except (JournalError, TimeoutError) as exc:
            log.warning("procedure step not kept", extra={"error": str(exc)})
            return PROCESSING_FAILURE, None
        log.info("procedure step in progress", extra={"sop_instance_uid": str(uid), "order_id": order_id})
        return SUCCESS, attributes

    def on_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "")  # an N-SET request
        changes = event.attribute_list
        status = changes.get("PerformedProcedureStepStatus")
        if status is not None and status not in STATUSES:
            return INVALID_ATTRIBUTE_VALUE, None
        with self.store.reading() as conn:
            stored = step_attributes(conn, uid)
        if stored is None:
            return NO_SUCH_INSTANCE, None
        merged = Dataset.from_json(stored)
        merged.update(changes)
        try:
            before = self.store.journal.write(set_step(uid, status, merged.to_json(), time.time()), WRITE_TIMEOUT_S)
        except (JournalError, TimeoutError) as exc:
            log.warning("procedure step not updated", extra={"error": str(exc)})
            return PROCESSING_FAILURE, None
        if before == "":
            return NO_SUCH_INSTANCE, None
        if before != "IN PROGRESS":  # PS3.4 F.7.2.2: a COMPLETED or DISCONTINUED step is final
            log.warning("procedure step already final", extra={"sop_instance_uid": uid, "status": before})
            return PROCESSING_FAILURE, None
        log.info("procedure step updated", extra={"sop_instance_uid": uid, "status": status or "IN PROGRESS"})
        return SUCCESS, merged
