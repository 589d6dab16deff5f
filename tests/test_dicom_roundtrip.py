"""Every DICOM file shipped inside pydicom goes in with dcmtk's dcmsend and comes out the same."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

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


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _mismatch(path: Path, original: pydicom.Dataset, spool: Path, row: Any) -> str:
    """What is wrong with the stored version `row` as a copy of `original` ('' if nothing)."""
    stored = _read(spool / row["spool_path"])
    sent_syntax = UID(original.file_meta.TransferSyntaxUID)
    stored_syntax = UID(stored.file_meta.TransferSyntaxUID)
    if row["transfer_syntax_uid"] != stored_syntax:
        return f"journal says {row['transfer_syntax_uid']}, file is {stored_syntax}"
    if sent_syntax.is_compressed and stored_syntax != sent_syntax:
        return f"compressed {sent_syntax.name} stored as {stored_syntax.name}"
    differing = dataset_differences(original, stored)
    return f"dataset differs in {differing[:5]}" if differing else ""


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
        # Files sharing a SOP Instance UID become versions, or duplicates of an earlier one
        # when the client's conversion made their bytes equal: one version must match.
        mismatches = [_mismatch(path, original, gateway.data_dir / "spool", row) for row in rows]
        if all(mismatches):
            problems.append(f"{path.name}: no stored version matches: {mismatches}")
    assert not problems, "\n".join(problems)
    # Each stored file is distinct content, named by its hash; nothing is left half-written.
    assert len(gateway.spool_files()) == len(gateway.instances())
    assert gateway.incoming_files() == []
