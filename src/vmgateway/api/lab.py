"""Lab orders: Vetmanager's orders reach the clinic's analyzers (HL7 ORM^O01 over MLLP).
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas import LabOrderRecord, LabRetried, errors
from vmgateway.config import LabInstrument
from vmgateway.lab.order import LabOrder
from vmgateway.lab.orm import CannotEncode, Control, orm_o01

router = APIRouter(prefix="/api/v1/lab/orders", tags=["lab"], responses=errors(401, 403, 429))

ORDER_STATES = "^(queued|sent|acknowledged|failed|dead|resulted)$"


def _instrument(view: GatewayView, order: LabOrder) -> LabInstrument:
    """The instrument the order names; 409 when none of that name is configured."""
    for instrument in view.settings.lab.instruments:
        if instrument.name == order.instrument:
            return instrument
    known = ", ".join(i.name for i in view.settings.lab.instruments) or "none: [[lab.instruments]] is empty"
    raise HTTPException(409, f"instrument {order.instrument!r} is not configured (configured: {known})")


def _builder(view: GatewayView, order: LabOrder, control: Control) -> Any:
    """The message as it will be queued, tried once here: a value its charset cannot carry is a
    409 now, not a message that can never be written."""
    instrument = _instrument(view, order)
    try:
        orm_o01(order, instrument, control, "VMG0", datetime.now())
    except CannotEncode as exc:
        raise HTTPException(409, str(exc)) from None
    return lambda control_id: orm_o01(order, instrument, control, control_id, datetime.now())


async def _record(view: GatewayView, order_id: str) -> dict[str, Any]:
    found = await view.store.lab.order(order_id)
    if found is None:
        raise HTTPException(404, f"no lab order {order_id}")
    return found


@router.post("", status_code=201, response_model=LabOrderRecord, responses=errors(409, 413))
async def place_lab_order(order: LabOrder, who: Caller, view: Gateway) -> dict[str, Any]:
    """Queue an order for its instrument (ORC-1 NW); it is sent in the background, in order, and
    its state follows (GET it)."""
    build = _builder(view, order, "NW")
    if not await view.store.lab.place(order.order_id, order.instrument, order.model_dump_json(), build):
        raise HTTPException(409, f"lab order {order.order_id} exists already: PUT to change it")
    await view.audit(who, f"lab: order {order.order_id} placed for {order.instrument}")
    return await _record(view, order.order_id)


@router.put("/{order_id}", response_model=LabOrderRecord, responses=errors(404, 409, 413))
async def change_lab_order(order_id: str, order: LabOrder, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change an order: the instrument gets it again with ORC-1 XO."""
    if order.order_id != order_id:
        raise HTTPException(409, f"the body's order_id {order.order_id!r} is not {order_id!r}")
    refused = await view.store.lab.follow_up(order_id, "XO", order.model_dump_json(), _builder(view, order, "XO"))
    _refusal(order_id, refused)
    await view.audit(who, f"lab: order {order_id} changed")
    return await _record(view, order_id)


@router.delete("/{order_id}", response_model=LabOrderRecord, responses=errors(404, 409))
async def cancel_lab_order(order_id: str, who: Caller, view: Gateway) -> dict[str, Any]:
    """Cancel an order: the instrument gets ORC-1 CA (after what it was sent before)."""
    known = await _record(view, order_id)
    order = LabOrder.model_validate(known["order"])
    _refusal(order_id, await view.store.lab.follow_up(order_id, "CA", None, _builder(view, order, "CA")))
    await view.audit(who, f"lab: order {order_id} cancelled")
    return await _record(view, order_id)


def _refusal(order_id: str, refused: str | None) -> None:
    if refused == "unknown":
        raise HTTPException(404, f"no lab order {order_id}")
    if refused == "cancelled":
        raise HTTPException(409, f"lab order {order_id} is cancelled: place a new one")
    if refused == "instrument":
        raise HTTPException(409, f"lab order {order_id} cannot move to another instrument: cancel it, place a new one")


@router.post("/{order_id}/retry", response_model=LabRetried, responses=errors(404))
async def retry_lab_order(order_id: str, who: Caller, view: Gateway) -> dict[str, Any]:
    """Queue the order's dead and failed messages again (after the instrument was fixed)."""
    await _record(view, order_id)
    requeued = await view.store.lab.retry(order_id)
    await view.audit(who, f"lab: order {order_id} retried ({requeued} message(s))")
    return {"order_id": order_id, "requeued": requeued}


@router.get("", response_model=list[LabOrderRecord])
async def list_lab_orders(who: Caller, view: Gateway,
                          state: Annotated[str | None, Query(pattern=ORDER_STATES)] = None) -> list[dict[str, Any]]:
    """Orders, newest first (the latest 500), of one state or all."""
    return await view.store.lab.orders(state)


@router.get("/{order_id}", response_model=LabOrderRecord, responses=errors(404))
async def get_lab_order(order_id: str, who: Caller, view: Gateway) -> dict[str, Any]:
    return await _record(view, order_id)
