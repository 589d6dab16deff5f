"""Lab orders: Vetmanager's orders reach the clinic's analyzers (HL7 ORM^O01 over MLLP). The rules
are `vmgateway.lab.orders`'; the routes translate its refusals into 404 and 409.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from vmgateway.api.deps import Caller, Gateway
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.lab import LabOrderRecord, LabRetried
from vmgateway.lab.order import LabOrder
from vmgateway.lab.orders import NoSuchOrder, OrderRefused

router = APIRouter(prefix="/api/v1/lab/orders", tags=["lab"], responses=errors(401, 403, 429))

ORDER_STATES = "^(queued|sent|acknowledged|failed|dead|resulted)$"


@asynccontextmanager
async def _answered() -> AsyncIterator[None]:
    """A refusal as its HTTP status: 404 no such order, 409 not now or not like this."""
    try:
        yield
    except NoSuchOrder as exc:
        raise HTTPException(404, str(exc)) from None
    except OrderRefused as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("", status_code=201, response_model=LabOrderRecord, responses=errors(409, 413))
async def place_lab_order(order: LabOrder, who: Caller, view: Gateway) -> LabOrderRecord:
    """Queue an order for its instrument (ORC-1 NW); it is sent in the background, in order, and
    its state follows (GET it)."""
    async with _answered():
        placed = await view.lab.place(order)
    await view.audit(who, f"lab: order {order.order_id} placed for {order.instrument}")
    return LabOrderRecord.model_validate(placed)


@router.put("/{order_id}", response_model=LabOrderRecord, responses=errors(404, 409, 413))
async def change_lab_order(order_id: str, order: LabOrder, who: Caller, view: Gateway) -> LabOrderRecord:
    """Change an order: the instrument gets it again with ORC-1 XO."""
    if order.order_id != order_id:
        raise HTTPException(409, f"the body's order_id {order.order_id!r} is not {order_id!r}")
    async with _answered():
        changed = await view.lab.change(order)
    await view.audit(who, f"lab: order {order_id} changed")
    return LabOrderRecord.model_validate(changed)


@router.delete("/{order_id}", response_model=LabOrderRecord, responses=errors(404, 409))
async def cancel_lab_order(order_id: str, who: Caller, view: Gateway) -> LabOrderRecord:
    """Cancel an order: the instrument gets ORC-1 CA (after what it was sent before)."""
    async with _answered():
        cancelled = await view.lab.cancel(order_id)
    await view.audit(who, f"lab: order {order_id} cancelled")
    return LabOrderRecord.model_validate(cancelled)


@router.post("/{order_id}/retry", response_model=LabRetried, responses=errors(404))
async def retry_lab_order(order_id: str, who: Caller, view: Gateway) -> LabRetried:
    """Queue the order's dead and failed messages again (after the instrument was fixed)."""
    async with _answered():
        requeued = await view.lab.retry(order_id)
    await view.audit(who, f"lab: order {order_id} retried ({requeued} message(s))")
    return LabRetried(order_id=order_id, requeued=requeued)


@router.get("", response_model=list[LabOrderRecord])
async def list_lab_orders(who: Caller, view: Gateway,
                          state: Annotated[str | None, Query(pattern=ORDER_STATES)] = None) -> list[LabOrderRecord]:
    """Orders, newest first (the latest 500), of one state or all."""
    return [LabOrderRecord.model_validate(order) for order in await view.store.lab.orders(state)]


@router.get("/{order_id}", response_model=LabOrderRecord, responses=errors(404))
async def get_lab_order(order_id: str, who: Caller, view: Gateway) -> LabOrderRecord:
    async with _answered():
        return LabOrderRecord.model_validate(await view.lab.get(order_id))
