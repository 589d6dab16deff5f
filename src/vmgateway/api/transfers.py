"""Transfers: the switch Vetmanager turns on after commissioning, the queue, dead items.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from vmgateway.api.deps import MAX_ID, Caller, Gateway, GatewayView
from vmgateway.api.gateway import transfers_state
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.transfers import DeadPage, Retried, Switched, Transfers

router = APIRouter(prefix="/api/v1/transfers", tags=["transfers"],
                   responses=errors(401, 403, 429))


class RetryRequest(BaseModel):
    item_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(default=None, min_length=1, max_length=10000)


async def switch_transfers(view: GatewayView, who: str, active: bool) -> None:
    """Switch transfers (pull feed and push alike) on or off, and say who did."""
    await view.store.settings.switch_transfers(active)
    await view.audit(who, "transfers activated" if active else "transfers deactivated")


@router.get("", response_model=Transfers)
async def get_transfers(who: Caller, view: Gateway) -> dict[str, Any]:
    """Whether transfers are active; in push mode each destination's state; items waiting and dead."""
    return await transfers_state(view)


@router.get("/dead", response_model=DeadPage)
async def list_dead_items(who: Caller, view: Gateway, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, object]:
    """Items given up on (refused transfers.max_attempts times, or undeliverable for transfers.max_age_h)."""
    found = await view.store.deliveries.dead_items(after, limit)
    return {"items": found, "next": found[-1].id if found else after}


@router.post("/retry", response_model=Retried, responses=errors(413))
async def retry_dead_items(request: RetryRequest, who: Caller, view: Gateway) -> dict[str, list[int]]:
    """Put dead items back in the queue (all of them when item_ids is left out)."""
    revived = await view.store.deliveries.revive(request.item_ids)
    await view.audit(who, f"retried {len(revived)} dead item(s)")
    return {"retried": revived}


@router.post("/activate", response_model=Switched)
async def activate_transfers(who: Caller, view: Gateway) -> dict[str, bool]:
    """Switch transfers on: the pull feed opens, push destinations start sending."""
    await switch_transfers(view, who, True)
    return {"active": True}


@router.post("/deactivate", response_model=Switched)
async def deactivate_transfers(who: Caller, view: Gateway) -> dict[str, bool]:
    """Switch transfers off: items are still received and kept, nothing leaves."""
    await switch_transfers(view, who, False)
    return {"active": False}
