"""What the journal keeps of a received instance, read from the spooled file.

The structure walk (integrity.py) finds the raw values; pydicom decodes them with the
instance's Specific Character Set, so Å/Ä/Ö in ISO_IR 100 and ISO_IR 192 arrive as the same
text. A value of plain ASCII reads the same in every character set DICOM defines (without an
escape, even ISO 2022's start in ASCII), so it is taken as it is: pydicom's decoding of the
thirteen fields was 0.1 ms of a small instance's 3.9 ms here, and a property test holds the
shortcut to pydicom's answer. Pixel data is never read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import overload

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vmgateway.dicom.integrity import RepeatedElement, TooLarge, Truncated, scan_part10
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
_TAG_OF = {keyword: int(tag_for_keyword(keyword) or 0) for keyword in _KEYWORDS}
_TAGS = frozenset(_TAG_OF.values())
_VR_OF = {tag: dictionary_VR(tag) for tag in _TAGS}
_SPLIT_VRS = frozenset({"LO", "SH"})
"""Text VRs whose values pydicom strips one by one (the others lose their padding only at the end)."""


class UnreadableInstance(Exception):
    """The dataset cannot be read far enough to know what it is, or is not whole."""


def read_instance(path: Path) -> DicomInstance:
    """Check that the received file is whole and extract its journal fields."""
    try:
        scan = scan_part10(path, _TAGS)
        dataset: Dataset | None = None
        plain = {tag: text for tag, raw in scan.elements.items() if (text := plain_text(raw)) is not NOT_PLAIN}
    except Truncated as exc:
        raise UnreadableInstance(f"dataset is not whole: {exc}") from None
    except RepeatedElement as exc:
        raise UnreadableInstance(f"dataset is ambiguous: {exc}") from None
    except TooLarge as exc:
        raise UnreadableInstance(f"dataset is refused: {exc}") from None
    except Exception as exc:  # pydicom and UID checks raise many types for malformed input
        raise UnreadableInstance(f"dataset cannot be parsed: {exc}") from None

    def field(keyword: str) -> str | None:
        nonlocal dataset
        tag = _TAG_OF[keyword]
        if tag in plain:
            return plain[tag]
        if dataset is None:  # made only when some field is not plain ASCII
            dataset = Dataset()
            for raw in scan.elements.values():
                dataset[raw.tag] = raw  # decoded by pydicom on access, with the charset
        return decoded_text(dataset, keyword)

    try:
        sop_class = field("SOPClassUID")
        sop_instance = field("SOPInstanceUID")
        if not sop_class or not sop_instance:
            raise UnreadableInstance("dataset has no SOP Class UID or SOP Instance UID")
        return DicomInstance(
            sop_class_uid=_uid(sop_class, "SOP Class UID"),
            sop_instance_uid=_uid(sop_instance, "SOP Instance UID"),
            transfer_syntax_uid=str(scan.transfer_syntax),
            study_instance_uid=_uid(field("StudyInstanceUID"), "Study Instance UID"),
            series_instance_uid=_uid(field("SeriesInstanceUID"), "Series Instance UID"),
            patient_id=field("PatientID"),
            patient_name=field("PatientName"),
            accession_number=field("AccessionNumber"),
            modality=field("Modality"),
            study_date=field("StudyDate"),
            species=field("PatientSpeciesDescription"),
            breed=field("PatientBreedDescription"),
            responsible_person=field("ResponsiblePerson"),
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


NOT_PLAIN = "<not plain>"
_PLAIN = re.compile(rb"[\x20-\x7e]*\x00*")
"""Printable ASCII, padded with NULs perhaps: no escape, no control character to interpret."""


def plain_text(raw: RawDataElement) -> str | None:
    """The journal's text of `raw` without pydicom, as `decoded_text` would give it, when its
    bytes are printable ASCII and its VR is the dictionary's; else NOT_PLAIN."""
    value = raw.value
    vr = _VR_OF[raw.tag]
    if not isinstance(value, bytes) or not _PLAIN.fullmatch(value) or raw.VR not in (vr, None):
        return NOT_PLAIN
    if vr == "UI" and b"\\" in value:  # never a valid UID: pydicom's words go in the refusal
        return NOT_PLAIN
    text = value.decode("ascii")
    if vr in _SPLIT_VRS:
        text = "\\".join(part.rstrip(" \x00") for part in text.split("\\"))
    elif vr == "PN":  # pydicom drops a name's empty trailing groups (`Doe^John=` is `Doe^John`)
        text = "\\".join(part.rstrip("=") for part in text.rstrip(" \x00").split("\\"))
    return text.strip(" \x00") or None


def decoded_text(dataset: Dataset, keyword: str) -> str | None:
    """The journal's text of an element, as pydicom decodes it with the instance's charset."""
    value = dataset.get(keyword)
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip(" \x00") or None
