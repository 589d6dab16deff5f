"""Fetching the missing instances of one series: C-GET (default) or C-MOVE.

C-GET proposes one presentation context per transfer syntax for each storage SOP class it
needs (with the SCP role), at most 128 contexts an association. Offered several syntaxes in
one context, Orthanc 1.10 picks the uncompressed one and then fails "Cannot transcode"
(0xC000) for JPEG 2000, and silently decompresses JPEG baseline; one context per syntax makes
it send the original. Needed SOP classes beyond what fits go in further associations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from vmgateway.config import PacsConfig
from vmgateway.dicom.keeping import keep_instance, no_delay
from vmgateway.dicom.statuses import SUCCESS, Service, answering
from vmgateway.model import Sender
from vmgateway.pacs.query import PENDING, PacsError, PacsInstance, associate
from vmgateway.store import Store

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
    JPEG2000Lossless, JPEG2000, JPEGLSLossless, JPEGLSNearLossless, RLELossless, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
MAX_CONTEXTS = 128
SOP_CLASSES_PER_ASSOCIATION = (MAX_CONTEXTS - 1) // len(TRANSFER_SYNTAXES)
"""One context is the query model's; the rest are storage contexts, one per syntax."""


@dataclass
class Fetched:
    kept: list[str] = field(default_factory=list)
    """SOP Instance UIDs now in the store (C-GET), or the PACS's count of sent ones (C-MOVE)."""
    failed: int = 0
    problems: list[str] = field(default_factory=list)


def _identifier(study_uid: str, series_uid: str, instances: list[PacsInstance]) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = series_uid
    identifier.SOPInstanceUID = [i.sop_instance_uid for i in instances]  # list of UID matching
    return identifier


def _final_counts(responses: object, fetched: Fetched, verb: str, config: PacsConfig, calling_ae: str) -> None:
    last = None
    for answer_status, _ in responses:  # type: ignore[attr-defined]
        if not answer_status:
            raise PacsError(f"the PACS gave no valid answer to the {verb}; if it does not accept it from"
                            f" {calling_ae}, register the gateway there (AE title, this box's address"
                            f"{', port 4006' if verb == 'C-MOVE' else ''})")
        last = answer_status
        if int(answer_status.Status) not in PENDING:
            break
    if last is None:
        raise PacsError(f"no answer to the {verb}")
    code = int(last.Status)
    fetched.failed += int(last.get("NumberOfFailedSuboperations", 0) or 0)
    if code not in (0x0000, 0xB000):
        hint = ""
        if verb == "C-MOVE" and code in (0xA801, 0xC000):
            hint = (f": register the gateway on the PACS as a destination (AE title {calling_ae}, this box's"
                    " address, port 4006), or use pacs.retrieve = \"get\"")
        fetched.problems.append(f"{verb} status 0x{code:04X}{hint}")
        log.warning("pacs retrieval incomplete", extra={"verb": verb, "status": f"0x{code:04X}",
                                                        "pacs": config.ae_title})


Wanted = tuple[str, str, list[PacsInstance]]
"""Study Instance UID, Series Instance UID, and the instances of that series to fetch."""


def fetch_by_get(config: PacsConfig, calling_ae: str, store: Store, wanted: list[Wanted]) -> Fetched:
    """C-GET every series' missing instances, on as few associations as the contexts allow."""
    fetched = Fetched()
    sender = Sender("pacs", config.ae_title, config.host)

    @answering(Service.STORE)
    def keep(sender: Sender, path: str) -> int | Dataset:
        return keep_instance(store, path, sender)

    def on_store(event: evt.Event) -> int | Dataset:
        answer = keep(sender, event.dataset_path)
        if answer == SUCCESS:
            fetched.kept.append(str(getattr(event.request, "AffectedSOPInstanceUID", "")))
        return answer

    classes = sorted({i.sop_class_uid for _, _, instances in wanted for i in instances})
    for start in range(0, len(classes), SOP_CLASSES_PER_ASSOCIATION):
        group = classes[start:start + SOP_CLASSES_PER_ASSOCIATION]
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in group:
            for syntax in TRANSFER_SYNTAXES:
                ae.add_requested_context(sop_class, syntax)
        roles = [build_role(sop_class, scp_role=True) for sop_class in group]
        assoc = _associate_with(ae, config, roles, [(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, no_delay)])
        try:
            for study_uid, series_uid, instances in wanted:
                these = [i for i in instances if i.sop_class_uid in group]
                if these:
                    responses = assoc.send_c_get(_identifier(study_uid, series_uid, these),
                                                 StudyRootQueryRetrieveInformationModelGet)
                    _final_counts(responses, fetched, "C-GET", config, calling_ae)
        finally:
            assoc.release()
    return fetched


def fetch_by_move(config: PacsConfig, calling_ae: str, wanted: list[Wanted]) -> Fetched:
    """The PACS sends them to our Storage SCP; they are kept there as any pushed instance."""
    fetched = Fetched()
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = associate(ae, config)
    try:
        for study_uid, series_uid, instances in wanted:
            responses = assoc.send_c_move(_identifier(study_uid, series_uid, instances), calling_ae,
                                          StudyRootQueryRetrieveInformationModelMove)
            _final_counts(responses, fetched, "C-MOVE", config, calling_ae)
    finally:
        assoc.release()
    return fetched


def _associate_with(ae: AE, config: PacsConfig, roles: list[Any], handlers: list[Any]) -> Association:
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout_s
    try:
        assoc = ae.associate(config.host, config.port, ae_title=config.ae_title, ext_neg=roles,
                             evt_handlers=handlers)
    except OSError as exc:
        raise PacsError(f"cannot reach the PACS at {config.host}:{config.port}: {exc}") from None
    if not assoc.is_established:
        raise PacsError(f"no C-GET association with the PACS {config.ae_title}@{config.host}:{config.port}"
                        " (rejected or not reachable): is VM_GATEWAY registered there?")
    return assoc
