"""What the journal keeps of a received instance, read from the spooled file.

The structure walk (integrity.py) finds the raw values; pydicom decodes them with the
instance's Specific Character Set, so Å/Ä/Ö in ISO_IR 100 and ISO_IR 192 arrive as the same
text. Pixel data is never read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import overload

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vmgateway.dicom.integrity import RepeatedElement, Truncated, scan_part10
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
    except RepeatedElement as exc:
        raise UnreadableInstance(f"dataset is ambiguous: {exc}") from None
    except Exception as exc:  # pydicom and UID checks raise many types for malformed input
        raise UnreadableInstance(f"dataset cannot be parsed: {exc}") from None
    try:
        sop_class = _text(dataset, "SOPClassUID")
        sop_instance = _text(dataset, "SOPInstanceUID")
        if not sop_class or not sop_instance:
            raise UnreadableInstance("dataset has no SOP Class UID or SOP Instance UID")
        return DicomInstance(
            sop_class_uid=_uid(sop_class, "SOP Class UID"),
            sop_instance_uid=_uid(sop_instance, "SOP Instance UID"),
            transfer_syntax_uid=str(scan.transfer_syntax),
            study_instance_uid=_uid(_text(dataset, "StudyInstanceUID"), "Study Instance UID"),
            series_instance_uid=_uid(_text(dataset, "SeriesInstanceUID"), "Series Instance UID"),
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


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@overload
def _uid(value: str, what: str) -> str: ...
@overload
def _uid(value: None, what: str) -> None: ...
def _uid(value: str | None, what: str) -> str | None:
    """`value` when it is a UID as PS3.5 9.1 writes them: digits in dot-separated components, at
    most 64 characters. Leading zeros in a component are let through: some modalities make them,
    and they change nothing of what a UID can do here (file names are the content's hash; a UID
    reaches a header only as digits and dots)."""
    if value is None:
        return None
    if len(value) > 64 or not _UID.fullmatch(value):
        shown = value[:70].encode("unicode_escape").decode("ascii")
        raise UnreadableInstance(f"{what} is not a valid UID (digits and dots, at most 64): {shown!r}")
    return value


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip(" \x00") or None
