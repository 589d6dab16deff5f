"""Modality Worklist entries: Vetmanager schedules examinations, modalities find them.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydicom.uid import generate_uid

from vmgateway import records
from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.worklist import Cancelled, WorklistRecord
from vmgateway.worklist.entry import WorklistEntry, entry_from_json, entry_to_json

router = APIRouter(prefix="/api/v1/worklist", tags=["worklist"], responses=errors(401, 403, 429))

ENTRY_STATES = "^(scheduled|in_progress|performed|cancelled)$"


async def _keep(view: GatewayView, entry: WorklistEntry, create: bool) -> bool:
    """Create or change an entry. Its Study Instance UID is made here unless given, and kept
    across changes (a modality may already have images under it)."""
    if not entry.study_instance_uid:
        known = await view.store.worklist.entry(entry.order_id)
        fixed = entry_from_json(known.entry).study_instance_uid if known else ""
        entry = entry.model_copy(update={"study_instance_uid": fixed or generate_uid()})
    expires_at = entry.scheduled_at.timestamp() + view.settings.worklist.keep_days * 86400
    return await view.store.worklist.put_entry(entry.order_id, entry.accession_number, entry.study_instance_uid,
                                               entry.scheduled_at.isoformat(), entry_to_json(entry), expires_at,
                                               create)


async def _entry(view: GatewayView, order_id: str) -> records.WorklistRecord:
    found = await view.store.worklist.entry(order_id)
    if found is None:
        raise HTTPException(404, f"order {order_id} is not on the worklist")
    return found


@router.post("", status_code=201, response_model=WorklistRecord, responses=errors(409, 413))
async def create_worklist_entry(entry: WorklistEntry, who: Caller, view: Gateway) -> records.WorklistRecord:
    """Schedule an examination: the modality finds it in the worklist (Study Instance UID made
    here unless given)."""
    if not await _keep(view, entry, create=True):
        raise HTTPException(409, f"order {entry.order_id} is on the worklist already: PUT to change it")
    await view.audit(who, f"worklist: order {entry.order_id} scheduled")
    return await _entry(view, entry.order_id)


@router.put("/{order_id}", response_model=WorklistRecord, responses=errors(404, 409, 413))
async def update_worklist_entry(order_id: str, entry: WorklistEntry, who: Caller,
                                view: Gateway) -> records.WorklistRecord:
    """Change an entry (a cancelled one is scheduled again)."""
    if entry.order_id != order_id:
        raise HTTPException(409, f"the body's order_id {entry.order_id!r} is not {order_id!r}")
    if not await _keep(view, entry, create=False):
        raise HTTPException(404, f"order {order_id} is not on the worklist")
    await view.audit(who, f"worklist: order {order_id} changed")
    return await _entry(view, order_id)


@router.delete("/{order_id}", response_model=Cancelled, responses=errors(404))
async def cancel_worklist_entry(order_id: str, who: Caller, view: Gateway) -> dict[str, str]:
    """Take an entry off the worklist (kept as cancelled until it expires)."""
    if not await view.store.worklist.cancel_entry(order_id):
        raise HTTPException(404, f"order {order_id} is not on the worklist")
    await view.audit(who, f"worklist: order {order_id} cancelled")
    return {"order_id": order_id, "state": "cancelled"}


@router.get("", response_model=list[WorklistRecord])
async def list_worklist(who: Caller, view: Gateway,
                        state: Annotated[str | None, Query(pattern=ENTRY_STATES)] = None,
                        ) -> list[records.WorklistRecord]:
    """Entries not yet expired, by scheduled time. `in_progress`: a modality reported the step
    started (MPPS); `performed`: images arrived for it, or the step was reported completed."""
    return await view.store.worklist.entries(state)


@router.get("/{order_id}", response_model=WorklistRecord, responses=errors(404))
async def get_worklist_entry(order_id: str, who: Caller, view: Gateway) -> records.WorklistRecord:
    return await _entry(view, order_id)
