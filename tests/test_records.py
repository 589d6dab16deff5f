"""The store answers with typed records, and the API shows them field for field."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from pydantic import BaseModel

from vmgateway import records
from vmgateway.api.schemas import feed, lab, site, status, transfers, worklist

STORE = Path(__file__).parent.parent / "src" / "vmgateway" / "store"

SHOWN_AS = [
    (feed.Item, records.Item), (feed.DicomDetails, records.DicomFields), (feed.Hl7Details, records.Hl7Fields),
    (feed.AstmDetails, records.AstmFields), (feed.LabLink, records.LabLink), (feed.Study, records.Study),
    (feed.StudyInstance, records.StudyInstance), (status.Event, records.Event), (site.Device, records.SenderSeen),
    (transfers.DeadItem, records.DeadItem), (transfers.KindQueue, records.KindQueue),
    (status.KindTotals, records.KindTotals), (status.Journal, records.JournalState),
    (worklist.WorklistRecord, records.WorklistRecord), (lab.LabOrderRecord, records.LabOrderRecord),
    (lab.LabMessage, records.LabMessage),
]


@pytest.mark.parametrize(("answer", "record"), SHOWN_AS, ids=[answer.__name__ for answer, _ in SHOWN_AS])
def test_every_field_of_a_record_is_shown_and_nothing_else(answer: type[BaseModel], record: type) -> None:
    """An answer reads its record's attributes: a field added to one and not the other fails here
    (`extra="forbid"` cannot see it: a record is read by attribute)."""
    assert set(answer.model_fields) == {field.name for field in dataclasses.fields(record)}


def test_an_instruments_state_shows_its_queue() -> None:
    assert {field.name for field in dataclasses.fields(records.LabQueue)} <= set(lab.LabInstrumentState.model_fields)


def _public_signatures(folder: Path) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every public function of the modules in `folder` and every public method of their classes."""
    found = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            owners = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else (
                [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_") else [])
            found += [(f"{path.name}:{function.lineno} {function.name}", function) for function in owners
                      if not function.name.startswith("_")]
    return found


def _untyped(signatures: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]) -> list[str]:
    """The signatures that take or return `dict[str, Any]` or `dict[str, object]`."""
    offenders = []
    for where, function in signatures:
        arguments = function.args.args + function.args.kwonlyargs + function.args.posonlyargs
        annotations = [a.annotation for a in arguments if a.annotation] + ([function.returns] if function.returns else [])
        for annotation in annotations:
            text = ast.unparse(annotation).replace("'", "").replace('"', "").replace(" ", "")
            if "dict[str,Any]" in text or "dict[str,object]" in text:
                offenders.append(f"{where}: {text}")
    return offenders


def test_the_store_answers_with_no_untyped_mapping() -> None:
    """No `dict[str, Any]` (nor `dict[str, object]`) in what the store's public functions and
    methods take or return: what they answer is a record."""
    signatures = _public_signatures(STORE)
    assert len(signatures) > 100  # the walk saw the store's surface
    assert _untyped(signatures) == []


def test_the_untyped_check_sees_an_untyped_answer(tmp_path: Path) -> None:
    (tmp_path / "part.py").write_text("from typing import Any\n\n\nclass Part:\n"
                                      "    async def read(self) -> list[dict[str, Any]]:\n        return []\n"
                                      "    def _private(self, x: dict[str, object]) -> None:\n        pass\n")
    assert _untyped(_public_signatures(tmp_path)) == ["part.py:5 read: list[dict[str,Any]]"]


def test_records_know_only_the_model() -> None:
    tree = ast.parse(Path(records.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name for name in imported if name.startswith("vmgateway")} == {"vmgateway.model"}
