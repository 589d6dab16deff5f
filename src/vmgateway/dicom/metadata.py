"""What the journal keeps of a received instance, read from the spooled file.

The structure walk (integrity.py) finds the raw values; pydicom decodes them with the
instance's Specific Character Set, so Å/Ä/Ö in ISO_IR 100 and ISO_IR 192 arrive as the same
text. Pixel data is never read.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vmgateway.dicom.integrity import Truncated, scan_part10
from vmgateway.model import DicomInstance

_KEYWORDS = [
    "SpecificCharacterSet",
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
_TAGS = frozenset(int(tag_for_keyword(keyword) or 0) for keyword in _KEYWORDS)


class UnreadableInstance(Exception):
    """The dataset cannot be read far enough to know what it is, or is not whole."""


def read_instance(path: Path) -> DicomInstance:
    """Check that the received file is whole and extract its journal fields."""
    try:
        scan = scan_part10(path, _TAGS)
        dataset: Dataset
        if scan.transfer_syntax.is_deflated:
            dataset = dcmread(path, stop_before_pixels=True, specific_tags=_KEYWORDS)
        else:
            dataset = Dataset()
            for raw in scan.elements.values():
                dataset[raw.tag] = raw  # decoded by pydicom on access, with the charset
    except Truncated as exc:
        raise UnreadableInstance(f"dataset is not whole: {exc}") from None
    except Exception as exc:  # pydicom and UID checks raise many types for malformed input
        raise UnreadableInstance(f"dataset cannot be parsed: {exc}") from None
    try:
        sop_class = _text(dataset, "SOPClassUID")
        sop_instance = _text(dataset, "SOPInstanceUID")
        if not sop_class or not sop_instance:
            raise UnreadableInstance("dataset has no SOP Class UID or SOP Instance UID")
        return DicomInstance(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax_uid=str(scan.transfer_syntax),
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
    except UnreadableInstance:
        raise
    except Exception as exc:  # a value pydicom cannot decode
        raise UnreadableInstance(f"dataset cannot be parsed: {exc}") from None


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip(" \x00") or None
