"""Truncated datasets are recognised in every encoding, whole ones are never refused."""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_keyword, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from tests.support.dicomdata import PYDICOM_FILES
from vmgateway.dicom import integrity, metadata
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


def _element_ends(whole: bytes) -> set[int]:
    """Where each top-level element of the data set ends, found by pydicom's own reader (the
    places where a cut leaves a shorter data set that is valid in itself)."""
    fp = io.BytesIO(whole)
    fp.seek(132)
    syntax = pydicom.filereader._read_file_meta_info(fp).TransferSyntaxUID
    ends = {fp.tell()}
    for _ in pydicom.filereader.data_element_generator(fp, syntax.is_implicit_VR, syntax.is_little_endian):
        ends.add(fp.tell())
    return ends


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, set[int]]]:
    folder = tmp_path_factory.mktemp("samples")
    found = {}
    for name in SAMPLES:
        whole = _resaved(name, folder)
        found[name] = (whole, _element_ends(whole))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(SAMPLES), cut=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_a_cut_is_taken_only_where_it_falls_between_two_elements(
        samples: dict[str, tuple[bytes, set[int]]], tmp_path: Path, name: str, cut: float) -> None:
    whole, ends = samples[name]
    at = 132 + int(cut * (len(whole) - 132))
    path = tmp_path / "received.dcm"
    path.write_bytes(whole[:at])
    try:
        read_instance(path)
    except UnreadableInstance:
        return  # a cut between elements may be refused too: the prefix can lack its SOP Instance UID
    assert at in ends, f"{name} cut at byte {at} of {len(whole)} was taken as whole"


@pytest.mark.parametrize("name", SAMPLES)
def test_the_journal_fields_are_what_pydicom_reads(name: str, tmp_path: Path) -> None:
    whole = _resaved(name, tmp_path)
    path = tmp_path / "received.dcm"
    path.write_bytes(whole)
    instance, dataset = read_instance(path), pydicom.dcmread(path)
    assert instance.sop_instance_uid == dataset.SOPInstanceUID
    assert instance.sop_class_uid == dataset.SOPClassUID
    assert instance.study_instance_uid == dataset.get("StudyInstanceUID")
    assert instance.series_instance_uid == dataset.get("SeriesInstanceUID")
    assert instance.transfer_syntax_uid == dataset.file_meta.TransferSyntaxUID
    assert instance.patient_name == (str(dataset.PatientName).strip() or None if "PatientName" in dataset else None)
    assert instance.modality == (dataset.get("Modality") or None)


_CHARSETS = ["", "ISO_IR 100", "ISO_IR 192", "ISO_IR 13", "ISO 2022 IR 6\\ISO 2022 IR 87", "ISO 2022 IR 149",
             "GB18030", "GBK", "ISO_IR 144", "ISO_IR 166", "ISO 2022 IR 13\\ISO 2022 IR 87", "NOT A CHARSET"]
_JOURNAL_TAGS = sorted(metadata._TAGS - {0x00080005})


@settings(max_examples=500, deadline=None)
@given(charset=st.sampled_from(_CHARSETS), tag=st.sampled_from(_JOURNAL_TAGS),
       value=st.binary(max_size=40).map(lambda b: bytes(c & 0x7F for c in b))
       | st.text(alphabet=" \x00\\^=.09AZaz", max_size=20).map(str.encode),
       explicit=st.booleans())
def test_a_plain_ascii_value_is_read_as_pydicom_reads_it(charset: str, tag: int, value: bytes,
                                                         explicit: bool) -> None:
    """The shortcut past pydicom (metadata.plain_text) agrees with it in every character set."""
    raw = RawDataElement(BaseTag(tag), dictionary_VR(tag) if explicit else None, len(value), value, 0, True, True)
    dataset = Dataset()
    dataset.SpecificCharacterSet = charset.split("\\") if charset else None
    dataset[tag] = raw
    taken = metadata.plain_text(raw)
    if metadata._PLAIN.fullmatch(value) and b"\\" not in value:
        assert taken is not metadata.NOT_PLAIN  # the shortcut is taken where it can be
    if taken is not metadata.NOT_PLAIN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert taken == metadata.decoded_text(dataset, dictionary_keyword(tag))


def _deflated(folder: Path, name: str = "CT_small.dcm") -> bytes:
    """The sample re-encoded as pydicom writes Deflated Explicit VR Little Endian."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(PYDICOM_FILES / name)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        path = folder / f"deflated-{name}"
        ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_a_deflated_data_set_is_inflated_and_walked(tmp_path: Path) -> None:
    """A deflated data set cut short inside a valid zlib stream was once acknowledged."""
    whole = _deflated(tmp_path)
    path = tmp_path / "received.dcm"
    path.write_bytes(whole)
    kept = read_instance(path)
    assert kept.sop_instance_uid == pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm").SOPInstanceUID
    assert kept.transfer_syntax_uid == pydicom.uid.DeflatedExplicitVRLittleEndian
    for cut in (2, 10, 500, len(whole) // 2):  # (1 may take only the even-length padding)
        path.write_bytes(whole[:-cut])
        with pytest.raises(UnreadableInstance, match="its zlib stream is cut short|no valid deflate stream"):
            read_instance(path)
    path.write_bytes(whole + b"\x01\x02")
    with pytest.raises(UnreadableInstance, match="bytes follow the end of the deflated data set"):
        read_instance(path)
    assert not list(tmp_path.glob(".inflated-*")), "an inflated copy was left behind"


def _meta_end(part10: bytes) -> int:
    """Where the file meta ends: after (0002,0000) and the group length it gives."""
    return 144 + int.from_bytes(part10[140:144], "little")


def test_a_data_set_whose_stream_is_whole_but_whose_content_is_cut_is_refused(tmp_path: Path) -> None:
    whole = _resaved("CT_small.dcm", tmp_path)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(whole[_meta_end(whole):-100]) + compressor.flush()  # a whole stream, a cut data set
    deflated = _deflated(tmp_path)
    path = tmp_path / "received.dcm"
    path.write_bytes(deflated[:_meta_end(deflated)] + body)
    with pytest.raises(UnreadableInstance, match="not whole"):
        read_instance(path)


def test_a_deflate_bomb_is_refused_before_it_fills_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity, "MAX_INFLATED", 4 << 20)
    deflated = _deflated(tmp_path)
    meta = deflated[:_meta_end(deflated)]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(16)) + compressor.flush()  # 16 MB in ~16 KB
    path = tmp_path / "received.dcm"
    path.write_bytes(meta + bomb)
    with pytest.raises(UnreadableInstance, match="inflates past 4 MB"):
        read_instance(path)
    assert not list(tmp_path.glob(".inflated-*"))
