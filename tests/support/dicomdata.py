"""Test DICOM instances made from pydicom's own test files (no download, no network)."""

from __future__ import annotations

import array
import random
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def copies_of_ct_small(folder: Path, count: int) -> list[Path]:
    """`count` copies of CT_small.dcm, each with fresh SOP Instance UID (one study)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    template.StudyInstanceUID = generate_uid()
    template.SeriesInstanceUID = generate_uid()
    paths = []
    for number in range(count):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = number + 1
        path = folder / f"ct{number:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def one_file_per_instance(exclude: Mapping[str, str] | set[str]) -> list[Path]:
    """pydicom's test files, one per SOP Instance UID, a compressed one where there is: pydicom
    ships some UIDs in several files (rtdose*.dcm: seven), and which version an archive keeps is
    its business. `exclude`: file names left out."""
    chosen: dict[str, Path] = {}
    compressed: dict[str, bool] = {}
    for path in sorted(p for p in PYDICOM_FILES.glob("*.dcm") if p.name not in exclude):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        uid, is_compressed = dataset.SOPInstanceUID, dataset.file_meta.TransferSyntaxUID.is_compressed
        if uid not in chosen or (is_compressed and not compressed[uid]):
            chosen[uid], compressed[uid] = path, is_compressed
    return sorted(chosen.values())


def secondary_capture(
    path: Path,
    *,
    charset: str = "ISO_IR 100",
    patient_name: str = "Fido",
    frames: int = 1,
    rows: int = 64,
    columns: int = 64,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    attributes: dict[str, str] | None = None,
) -> Path:
    """A small (or, with many frames, large) uncompressed multi-frame Secondary Capture."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SpecificCharacterSet = charset
    ds.PatientName = patient_name
    ds.PatientID = "VM-1"
    ds.Modality = "OT"
    ds.StudyDate = "20261127"
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    size = frames * rows * columns
    pattern = random.Random(ds.SOPInstanceUID).randbytes(min(size, 2**20))
    ds.PixelData = (pattern * (size // len(pattern) + 1))[:size]
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_differences(original: pydicom.Dataset, stored: pydicom.Dataset) -> list[str]:
    """Elements whose values differ. Ignored: group lengths and trailing padding, which
    dcmtk drops when it sends. When the client converted big endian to little endian (or
    back), OW pixel data is compared with its 16-bit words swapped back, as the standard
    defines OW byte order."""

    def comparable(ds: pydicom.Dataset) -> dict[int, object]:
        return {
            e.tag: e.value for e in ds
            if e.tag.element != 0 and e.keyword not in ("DataSetTrailingPadding", "PixelData")
        }

    left, right = comparable(original), comparable(stored)
    differing = [str(pydicom.tag.Tag(t)) for t in left.keys() | right.keys() if left.get(t) != right.get(t)]
    if "PixelData" in original:
        pixels = stored.get("PixelData")
        swapped = UID(original.file_meta.TransferSyntaxUID).is_little_endian != UID(
            stored.file_meta.TransferSyntaxUID
        ).is_little_endian
        if swapped and original["PixelData"].VR == "OW":
            words = array.array("H", pixels)
            words.byteswap()
            pixels = words.tobytes()
        if pixels != original.PixelData:
            differing.append("PixelData")
    return differing


# Files that dcmtk itself refuses to send (to its own storescp too): no file meta, no or an
# invalid SOP Class UID, truncated on purpose, or a broken JPEG stream.
REFUSED_BY_DCMTK = {
    "ExplVR_BigEndNoMeta.dcm": "no file meta",
    "ExplVR_LitEndNoMeta.dcm": "no file meta",
    "no_meta.dcm": "no file meta",
    "rtstruct.dcm": "no file meta",
    "no_meta_group_length.dcm": "missing SOP information",
    "UN_sequence.dcm": "missing SOP information",
    "priv_SQ.dcm": "missing SOP information",
    "empty_charset_LEI.dcm": "invalid SOP Class UID",
    "meta_missing_tsyntax.dcm": "invalid SOP Class UID",
    "nested_priv_SQ.dcm": "invalid SOP Class UID",
    "MR_truncated.dcm": "truncated pixel data",
    "rtplan_truncated.dcm": "truncated",
    "SC_rgb_jpeg.dcm": "truncated",
}


def dated_today(paths: list[Path], folder: Path) -> list[Path]:
    """Copies with today's StudyDate (the poller asks for studies of the last lookback_days days)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.StudyDate = date.today().strftime("%Y%m%d")
        copy = folder / path.name
        dataset.save_as(copy)
        copies.append(copy)
    return copies
