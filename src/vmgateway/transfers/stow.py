"""DICOMweb STOW-RS (PS3.18 10.5): instances of one study POSTed as multipart/related.

The body is streamed from the spool files, part by part, with its length known up front: a
batch is never assembled in memory, and servers that dislike chunked uploads are spared one.
The answer is read per instance: Referenced SOP Sequence (0008,1199) lists what was stored,
Failed SOP Sequence (0008,1198) what was not and why. The HTTP status alone is not the truth
(Orthanc answers 400 when some instances failed and the rest were stored).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from vmgateway.model import ItemKind
from vmgateway.records import Due
from vmgateway.transfers.outcome import (
    DESTINATION_STATUSES,
    Outcome,
    describe_failure,
    http_problem,
    is_transient,
    retry_after,
)
from vmgateway.transfers.pacing import Pace, paced

_CHUNK = 1 << 18
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


def _value(element: dict[str, Any] | None) -> Any:
    values = (element or {}).get("Value") or [None]
    return values[0]


def read_response(body: Any) -> tuple[set[str], dict[str, str]] | None:
    """SOP Instance UIDs stored, and those failed with their reason, from a DICOM JSON answer."""
    if not isinstance(body, dict) or not ({REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE} & body.keys()):
        return None
    stored = {str(_value(item.get(REFERENCED_SOP_INSTANCE_UID)))
              for item in (body.get(REFERENCED_SOP_SEQUENCE) or {}).get("Value") or [] if isinstance(item, dict)}
    failed = {}
    for item in (body.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
        if isinstance(item, dict):
            reason = _value(item.get(FAILURE_REASON))
            failed[str(_value(item.get(REFERENCED_SOP_INSTANCE_UID)))] = (
                f"STOW-RS failure reason 0x{reason:04X}" if isinstance(reason, int) else "STOW-RS failure")
    return stored, failed


class StowSink:
    name = "dicomweb"
    kind: ItemKind = "dicom"

    def __init__(self, url: str, http: httpx.AsyncClient, max_items: int, max_bytes: int,
                 pace: Pace | None = None) -> None:
        self.url = f"{url}/studies"
        self.http = http
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.pace = pace
        """Shared by every upload of this sink: the line is one (transfers.max_upload_kbit_s)."""

    def retarget(self, url: str) -> None:
        self.url = f"{url}/studies"

    async def send(self, batch: list[Due]) -> Outcome:
        outcome = Outcome()
        present = []
        for due in batch:  # a file gone from under us is that item's problem, not the batch's
            path = due.path
            if path is None or not path.is_file():
                outcome.refused.append((due.item_id, "its spool file is missing"))
            else:
                present.append((due, path, os.path.getsize(path)))
        if not present:
            return outcome
        boundary = uuid.uuid4().hex
        heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in present]
        tail = f"--{boundary}--\r\n".encode()
        length = sum(len(head) + size + 2 for head, (_, _, size) in zip(heads, present, strict=True)) + len(tail)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
        }
        orders = sorted({due.order_id for due, _, _ in present if due.order_id})
        if orders:  # Vetmanager's worklist orders these instances were linked to
            headers["X-Vmgateway-Order-Ids"] = ",".join(orders)
        body = paced(_multipart(heads, [path for _, path, _ in present], tail), self.pace)
        try:
            response = await self.http.post(self.url, content=body, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            outcome.unreachable = describe_failure(exc)
            return outcome
        self._read(response, [due for due, _, _ in present], outcome)
        return outcome

    @staticmethod
    def _read(response: httpx.Response, sent: list[Due], outcome: Outcome) -> None:
        try:
            found = read_response(response.json()) if response.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            found = None
        if found is None or response.status_code in DESTINATION_STATUSES:
            if is_transient(response.status_code):
                outcome.unreachable = http_problem(response)
                outcome.retry_after_s = retry_after(response)
            elif response.is_success:
                outcome.refused += [(due.item_id, f"{http_problem(response)}: no per-instance answer") for due in sent]
            elif len(sent) > 1:
                outcome.split = True
                outcome.unreachable = http_problem(response)
            else:
                outcome.refused.append((sent[0].item_id, http_problem(response)))
            return
        stored, failed = found
        for due in sent:
            if due.sop_instance_uid in stored:
                outcome.delivered.append(due.item_id)
            elif due.sop_instance_uid in failed:
                outcome.refused.append((due.item_id, f"{failed[due.sop_instance_uid]} (HTTP {response.status_code})"))
            elif is_transient(response.status_code):
                outcome.unreachable = http_problem(response)
            else:
                outcome.refused.append((due.item_id, f"not in the STOW-RS answer (HTTP {response.status_code})"))


async def _multipart(heads: list[bytes], paths: list[Path], tail: bytes) -> AsyncIterator[bytes]:
    """The body, read from disk one chunk at a time (reads off the event loop)."""
    for head, path in zip(heads, paths, strict=True):
        yield head
        with open(path, "rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                yield chunk
        yield b"\r\n"
    yield tail
