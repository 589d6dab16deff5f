"""Modality Performed Procedure Step SCP (N-CREATE, N-SET): a modality reports that an
examination from the worklist started, was completed, or was discontinued.

The answer comes only after the journal has the step (the same promise as for images). A step
is tied to its worklist entry by the Accession Number (or Study Instance UID) of its Scheduled
Step Attributes; a step for no known entry is kept all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom.dataset import Dataset

from vmgateway.dicom.statuses import (
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
    Service,
    answering_pair,
)
from vmgateway.model import Sender
from vmgateway.store import Store

log = logging.getLogger(__name__)

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

    @answering_pair(Service.PROCEDURE_STEP)
    def create(self, sender: Sender, uid: str, read_attributes: Callable[[], Dataset],
               ) -> tuple[int | Dataset, Dataset | None]:
        """N-CREATE of the step `uid` (the request's Affected SOP Instance UID); its attributes
        are read (decoded) here, inside the seam."""
        attributes = read_attributes()
        if not uid:
            return MISSING_ATTRIBUTE, None  # we do not make UIDs for modalities: they must name the step
        if attributes.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            return INVALID_ATTRIBUTE_VALUE, None  # PS3.4 F.7.2.1: a step is created IN PROGRESS
        accession, study = _scheduled(attributes)
        order_id = self.store.worklist.create_step(str(uid), accession, study, attributes.to_json(),
                                                   sender.name, WRITE_TIMEOUT_S)
        log.info("procedure step in progress", extra={"sop_instance_uid": str(uid), "order_id": order_id})
        return SUCCESS, attributes

    @answering_pair(Service.PROCEDURE_STEP)
    def update(self, sender: Sender, uid: str, read_changes: Callable[[], Dataset],
               ) -> tuple[int | Dataset, Dataset | None]:
        """N-SET of the step `uid` (the request's Requested SOP Instance UID); the changes are
        read (decoded) here, inside the seam."""
        changes = read_changes()
        status = changes.get("PerformedProcedureStepStatus")
        if status is not None and status not in STATUSES:
            return INVALID_ATTRIBUTE_VALUE, None
        stored = self.store.worklist.step_attributes(uid)
        if stored is None:
            return NO_SUCH_INSTANCE, None
        merged = Dataset.from_json(stored)
        merged.update(changes)
        before = self.store.worklist.set_step(uid, status, merged.to_json(), WRITE_TIMEOUT_S)
        if before == "":
            return NO_SUCH_INSTANCE, None
        if before != "IN PROGRESS":  # PS3.4 F.7.2.2: a COMPLETED or DISCONTINUED step is final
            log.warning("procedure step already final", extra={"sop_instance_uid": uid, "status": before})
            return PROCESSING_FAILURE, None
        log.info("procedure step updated", extra={"sop_instance_uid": uid, "status": status or "IN PROGRESS"})
        return SUCCESS, merged
