"""Every DICOM file shipped inside pydicom goes in with dcmtk's dcmsend and comes out the same."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import UID

from tests.support.dicomdata import PYDICOM_FILES, REFUSED_BY_DCMTK, dataset_differences
from tests.support.gateway import GatewayProcess, dcmtk


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


@pytest.mark.peer
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
