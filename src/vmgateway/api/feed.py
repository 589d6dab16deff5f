"""The pull feed: what was received, each item's bytes exactly as received, acknowledgements.
Closed (409) until Vetmanager activates transfers.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from vmgateway import records
from vmgateway.api.deps import MAX_ID, Active, Caller, Gateway, GatewayView
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.feed import Acknowledged, FeedPage, Item, StudiesPage
from vmgateway.astm.records import ASTM_MEDIA_TYPE, parse
from vmgateway.astm.to_hl7 import to_oru
from vmgateway.charsets import HL7_MEDIA_TYPE, hl7_content_type

router = APIRouter(prefix="/api/v1", tags=["feed"], dependencies=[Active],
                   responses=errors(401, 403, 409, 429))

ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class HL7Response(Response):
    """An HL7 v2 message over HTTP (ER7, the pipe-and-hat encoding)."""

    media_type = HL7_MEDIA_TYPE


_BYTES = {"schema": {"type": "string", "format": "binary"}}
CONTENT: dict[int | str, dict[str, object]] = {
    200: {"description": "The bytes exactly as received; the media type says the kind.",
          "content": {"application/dicom": _BYTES, HL7_MEDIA_TYPE: _BYTES, ASTM_MEDIA_TYPE: _BYTES}}}
"""The content endpoint's answers as OpenAPI says them (FastAPI cannot infer one per kind)."""


class AckRequest(BaseModel):
    item_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=10000)


@router.get("/feed", response_model=FeedPage)
async def list_feed(who: Caller, view: Gateway, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100, undelivered: bool = True) -> dict[str, object]:
    """Items received after the cursor `after` (an item ID), oldest first."""
    items = await view.store.feed.items_after(after, limit, undelivered)
    return {"items": items, "next": items[-1].id if items else after}


@router.get("/studies", response_model=StudiesPage)
async def list_studies(who: Caller, view: Gateway, after: str = "",
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, object]:
    """Complete studies (quiet for dicom.stable_after_s) with their instances' item IDs."""
    quiet_since = time.time() - view.settings.dicom.stable_after_s
    found = await view.store.feed.complete_studies(quiet_since, after, limit)
    return {"studies": found, "next": found[-1].study_instance_uid if found else after}


async def _item(view: GatewayView, item_id: int) -> tuple[records.Item, Path | None]:
    found = await view.store.feed.item(item_id)
    if found is None:
        raise HTTPException(404, f"no item {item_id}")
    return found


@router.get("/items/{item_id}", response_model=Item, responses=errors(404))
async def get_item(item_id: ItemId, who: Caller, view: Gateway) -> records.Item:
    return (await _item(view, item_id))[0]


@router.get("/items/{item_id}/content", response_model=None, response_class=Response,
            responses=errors(404, 410) | CONTENT)
async def get_item_content(item_id: ItemId, who: Caller, view: Gateway) -> FileResponse | StreamingResponse:
    """The item's bytes exactly as received: DICOM as a Part 10 file (Range supported),
    HL7 and ASTM as the raw message (ASTM: its records, CR-separated, as the frames carried them)."""
    record, path = await _item(view, item_id)
    if record.dicom is not None:
        if path is None:
            raise HTTPException(410, f"item {item_id} was delivered and its file removed"
                                     " (storage.keep_delivered_days)")
        if not path.is_file():  # the journal names it, the disk lost it (the start's check logged it)
            raise HTTPException(410, f"item {item_id}: its file is missing from the spool, lost on the disk;"
                                     " the sender may still have it")
        return FileResponse(path, media_type="application/dicom", filename=_file_name(record.id, record.dicom))
    if record.hl7 is not None:
        media_type = hl7_content_type(record.hl7.charset_used, record.hl7.charset)
    else:
        media_type = ASTM_MEDIA_TYPE
    return StreamingResponse(view.store.feed.payload_chunks(item_id), media_type=media_type,
                             headers={"content-length": str(record.size)})


@router.get("/items/{item_id}/hl7", response_class=HL7Response, responses=errors(404))
async def get_item_as_hl7(item_id: ItemId, who: Caller, view: Gateway) -> HL7Response:
    """An ASTM item as the equivalent HL7 v2.5 ORU^R01 (UTF-8; the mapping is in
    vmgateway/astm/to_hl7.py). The content endpoint keeps the raw original."""
    record, _ = await _item(view, item_id)
    if record.kind != "astm":
        raise HTTPException(409, f"item {item_id} is {record.kind}, not ASTM")
    message = to_oru(parse(await view.store.feed.payload(item_id)), item_id, view.settings.site.name)
    return HL7Response(message, media_type=hl7_content_type("UNICODE UTF-8", "UNICODE UTF-8"))


@router.post("/feed/ack", response_model=Acknowledged, responses=errors(413))
async def acknowledge_items(request: AckRequest, who: Caller, view: Gateway) -> dict[str, list[int]]:
    """Mark items as delivered (taken by Vetmanager)."""
    changed = await view.store.deliveries.mark_delivered(request.item_ids)
    if changed:
        await view.audit(who, f"acknowledged {len(changed)} item(s)")
    return {"delivered": changed}


def _file_name(item_id: int, dicom: records.DicomFields) -> str:
    """The instance's file name for Content-Disposition: its SOP Instance UID when that is one
    (digits and dots; instances kept before UIDs were checked may hold anything), else the item's id."""
    uid = dicom.sop_instance_uid
    return f"{uid}.dcm" if uid.replace(".", "").isdigit() and len(uid) <= 64 else f"item-{item_id}.dcm"
