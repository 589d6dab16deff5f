"""What the journal keeps of a received instance, read from the spooled file.

Values are decoded with the instance's Specific Character Set by pydicom, so Å/Ä/Ö in
ISO_IR 100 and ISO_IR 192 arrive as the same text. Pixel data is never read.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from vmgateway.dicom.integrity import Truncated, check_whole, dataset_offset
from vmgateway.store import DicomInstance

_KEYWORDS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "Modality",
    "StudyDate",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
]


class UnreadableInstance(Exception):
    """The dataset cannot be read far enough to know what it is, or is not whole."""


def read_instance(path: Path) -> DicomInstance:
    """Check that the received file is whole and extract its journal fields."""
    try:
        with open(path, "rb") as handle:
            meta_end = dataset_offset(handle)
            handle.seek(0)
            dataset = dcmread(handle, stop_before_pixels=True, specific_tags=_KEYWORDS)
            transfer_syntax = UID(dataset.file_meta.TransferSyntaxUID)
            check_whole(handle, meta_end, os.fstat(handle.fileno()).st_size, transfer_syntax)
    except Truncated as exc:
        raise UnreadableInstance(f"dataset is not whole: {exc}") from None
    except Exception as exc:  # pydicom raises many types for malformed input
        raise UnreadableInstance(f"dataset cannot be parsed: {exc}") from None
    sop_class = _text(dataset, "SOPClassUID")
    sop_instance = _text(dataset, "SOPInstanceUID")
    if not sop_class or not sop_instance:
        raise UnreadableInstance("dataset has no SOP Class UID or SOP Instance UID")
    return DicomInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=str(transfer_syntax),
        study_instance_uid=_text(dataset, "StudyInstanceUID"),
        series_instance_uid=_text(dataset, "SeriesInstanceUID"),
        patient_id=_text(dataset, "PatientID"),
        patient_name=_text(dataset, "PatientName"),
        accession_number=_text(dataset, "AccessionNumber"),
        modality=_text(dataset, "Modality"),
        study_date=_text(dataset, "StudyDate"),
        species=_text(dataset, "PatientSpeciesDescription"),
        breed=_text(dataset, "PatientBreedDescription"),
        responsible_person=_text(dataset, "ResponsiblePerson"),
    )


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip(" \x00") or None
