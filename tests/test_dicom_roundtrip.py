"""Every DICOM file shipped inside pydicom goes in with dcmtk's dcmsend and comes out the same."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.uid import UID

from tests.conftest import GatewayProcess, dcmtk
from tests.dicomdata import PYDICOM_FILES, dataset_differences

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

# Big endian files with 32-bit pixels in an OW element: dcmtk converts them to little endian
# by swapping 16-bit words (as OW says), which scrambles 32-bit values before they are sent.
# Their other elements are compared; their pixel data cannot be.
PIXELS_SCRAMBLED_BY_DCMTK = {"rtdose_expb.dcm", "rtdose_expb_1frame.dcm"}


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def test_every_pydicom_file_is_stored_exactly(gateway: GatewayProcess) -> None:
    files = sorted(p for p in PYDICOM_FILES.glob("*.dcm") if p.name not in REFUSED_BY_DCMTK)
    assert len(files) >= 60, "pydicom's test files are missing"
    problems = []
    for path in files:
        sent = dcmtk("dcmsend", "-dn", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), path)
        if sent.returncode != 0:
            problems.append(f"{path.name}: dcmsend failed ({sent.returncode}): {sent.stdout[-300:]}")
            continue
        original = _read(path)
        rows = [r for r in gateway.instances() if r["sop_instance_uid"] == original.SOPInstanceUID]
        if not rows:
            problems.append(f"{path.name}: not in the journal")
            continue
        row = rows[-1]  # files sharing a SOP Instance UID become versions; this one is the newest
        stored_path = gateway.data_dir / "spool" / row["spool_path"]
        stored = _read(stored_path)
        sent_syntax = UID(original.file_meta.TransferSyntaxUID)
        stored_syntax = UID(stored.file_meta.TransferSyntaxUID)
        if sent_syntax.is_compressed and stored_syntax != sent_syntax:
            problems.append(f"{path.name}: compressed {sent_syntax.name} stored as {stored_syntax.name}")
        if row["transfer_syntax_uid"] != stored_syntax:
            problems.append(f"{path.name}: journal says {row['transfer_syntax_uid']}, file is {stored_syntax}")
        differing = dataset_differences(original, stored, converted=stored_syntax != sent_syntax,
                                 scrambled=path.name in PIXELS_SCRAMBLED_BY_DCMTK)
        if differing:
            problems.append(f"{path.name}: dataset differs in {differing[:5]}")
    assert not problems, "\n".join(problems)
    # Each stored file is distinct content, named by its hash; nothing is left half-written.
    assert len(gateway.spool_files()) == len(gateway.instances())
    assert gateway.incoming_files() == []
