"""Truncated datasets are recognised in every encoding, whole ones are never refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from tests.dicomdata import PYDICOM_FILES
from vmgateway.dicom.metadata import UnreadableInstance, read_instance

SAMPLES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "JPEG2000.dcm",  # encapsulated pixel data
    "rtplan.dcm",  # nested sequences
    "SC_rgb_rle_2frame.dcm",  # several fragments
]


def _resaved(name: str, folder: Path) -> bytes:
    """The sample as a Part 10 file with a meta group length, as the receiver stores them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(PYDICOM_FILES / name)
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.mark.parametrize("name", SAMPLES)
def test_whole_and_cut_files(name: str, tmp_path: Path) -> None:
    whole = _resaved(name, tmp_path)
    path = tmp_path / "received.dcm"
    path.write_bytes(whole)
    assert read_instance(path).sop_instance_uid
    # A cut exactly between two elements leaves a shorter but valid dataset, which no
    # structure check can tell apart; these cuts fall inside headers or values.
    for cut in (1, 2, 4, 7, 8, 100, 333):
        path.write_bytes(whole[:-cut])
        with pytest.raises(UnreadableInstance):
            read_instance(path)


def test_trailing_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "received.dcm"
    path.write_bytes(_resaved("CT_small.dcm", tmp_path) + b"\x01\x02\x03")
    with pytest.raises(UnreadableInstance, match="not whole"):
        read_instance(path)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "received.dcm"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UnreadableInstance):
        read_instance(path)
