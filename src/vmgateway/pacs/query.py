"""C-FIND against the PACS (Study Root), level by level: studies in a date range, a study's
series, a series' instances."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from vmgateway.config import PacsConfig
from vmgateway.dicom.keeping import no_delay

PENDING = (0xFF00, 0xFF01)


class PacsError(Exception):
    """The PACS could not be reached or refused; the message is meant for a person."""


@dataclass(frozen=True)
class PacsStudy:
    study_instance_uid: str
    instances: int | None
    """NumberOfStudyRelatedInstances, when the PACS says."""
    study_date: str = ""
    patient_id: str = ""
    patient_name: str = ""
    modalities: str = ""
    accession_number: str = ""


@dataclass(frozen=True)
class PacsSeries:
    series_instance_uid: str
    instances: int | None


@dataclass(frozen=True)
class PacsInstance:
    sop_instance_uid: str
    sop_class_uid: str


def associate(ae: AE, config: PacsConfig) -> Association:
    """An association with the PACS, or PacsError saying why not."""
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout_s
    try:
        assoc = ae.associate(config.host, config.port, ae_title=config.ae_title,
                             evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    except OSError as exc:  # a host name that does not resolve, say
        raise PacsError(f"cannot reach the PACS at {config.host}:{config.port}: {exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise PacsError(f"the PACS {config.ae_title}@{config.host}:{config.port} rejected the association:"
                        " is VM_GATEWAY registered there (AE title, address)?")
    raise PacsError(f"no association with the PACS {config.ae_title}@{config.host}:{config.port}"
                    " (not reachable, or it aborted)")


def _find(assoc: Association, query: Dataset) -> Iterator[Dataset]:
    for answer_status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if not answer_status:  # timeout, abort or an invalid answer: Orthanc's way of refusing an unknown AE
            raise PacsError(f"the PACS gave no valid answer to the C-FIND; if it does not accept queries from"
                            f" {assoc.ae.ae_title}, register the gateway there (its AE title and this box's address)")
        code = int(answer_status.Status)
        if code in PENDING and identifier is not None:
            yield identifier
        elif code != 0x0000:
            raise PacsError(f"the PACS answered the C-FIND with status 0x{code:04X}")


def _count(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def find_studies(assoc: Association, lookback_days: int, today: date | None = None) -> list[PacsStudy]:
    today = today or date.today()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDate = f"{(today - timedelta(days=lookback_days)):%Y%m%d}-{today:%Y%m%d}"
    for keyword in ("StudyInstanceUID", "NumberOfStudyRelatedInstances", "ModalitiesInStudy", "PatientID",
                    "PatientName", "AccessionNumber"):
        setattr(query, keyword, "")
    return [
        PacsStudy(str(found.StudyInstanceUID), _count(found.get("NumberOfStudyRelatedInstances", "")),
                  str(found.get("StudyDate", "")), str(found.get("PatientID", "")),
                  str(found.get("PatientName", "")), _modalities(found.get("ModalitiesInStudy", "")),
                  str(found.get("AccessionNumber", "")))
        for found in _find(assoc, query) if found.get("StudyInstanceUID")
    ]


def _modalities(value: object) -> str:
    """ModalitiesInStudy as DICOM writes a multi-valued CS: `CT\\SR`; one value is a plain string
    (joined letter by letter it read `C\\T`)."""
    return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value or "")


def find_series(assoc: Association, study_uid: str) -> list[PacsSeries]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.NumberOfSeriesRelatedInstances = ""
    return [PacsSeries(str(found.SeriesInstanceUID), _count(found.get("NumberOfSeriesRelatedInstances", "")))
            for found in _find(assoc, query) if found.get("SeriesInstanceUID")]


def find_instances(assoc: Association, study_uid: str, series_uid: str) -> list[PacsInstance]:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    return [PacsInstance(str(found.SOPInstanceUID), str(found.get("SOPClassUID", "")))
            for found in _find(assoc, query) if found.get("SOPInstanceUID")]
