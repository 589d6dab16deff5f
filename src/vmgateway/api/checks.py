"""Commissioning tests: the devices seen, a C-ECHO from the box, a test message to its own
HL7 listener. (No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from vmgateway.addresses import local_address
from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.site import Device, TestResult
from vmgateway.config import AETitle
from vmgateway.dicom.echo import echo
from vmgateway.hl7.client import send_messages, test_message
from vmgateway.model import OWN_TEST_APPLICATION_PREFIX
from vmgateway.records import SenderSeen

router = APIRouter(prefix="/api/v1", tags=["tests"], responses=errors(401, 403, 429))

TIMEOUT_S = 10


class EchoRequest(BaseModel):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    called_ae: AETitle = "ANY-SCP"
    calling_ae: AETitle | None = None


@router.get("/devices", response_model=list[Device])
async def list_devices(who: Caller, view: Gateway) -> list[SenderSeen]:
    """Every DICOM calling AE / address and HL7 sender seen, with first/last contact."""
    return await view.store.feed.senders()


async def run_echo(view: GatewayView, who: str, request: EchoRequest) -> dict[str, Any]:
    """C-ECHO from the gateway (pynetdicom blocks: in a worker thread), audited."""
    began = time.monotonic()
    calling = request.calling_ae or view.settings.dicom.ae_title
    result = await asyncio.to_thread(echo, request.host, request.port, calling, request.called_ae, TIMEOUT_S)
    await view.audit(who, f"echo {request.called_ae}@{request.host}:{request.port}: {result.message}")
    return {"ok": result.ok, "message": result.message, "seconds": round(time.monotonic() - began, 3)}


@router.post("/tests/echo", response_model=TestResult, responses=errors(413))
async def test_echo(request: EchoRequest, who: Caller, view: Gateway) -> dict[str, Any]:
    """C-ECHO from the gateway to a PACS or modality."""
    return await run_echo(view, who, request)


@router.post("/tests/hl7", response_model=TestResult)
async def test_hl7(who: Caller, view: Gateway) -> dict[str, Any]:
    """A test message (MSH-11 = T) sent to the gateway's own HL7 listener, and its ACK."""
    control_id, message = test_message(f"{OWN_TEST_APPLICATION_PREFIX}TEST", view.settings.site.name)
    began = time.monotonic()
    try:
        hl7 = view.settings.hl7
        [answer] = await asyncio.to_thread(send_messages, local_address(hl7.bind), hl7.port, [message], TIMEOUT_S)
    except (OSError, ConnectionError) as exc:
        await view.audit(who, f"hl7 test: {exc}")
        return {"ok": False, "message": f"no answer from the HL7 listener: {exc}", "seconds": None}
    await view.audit(who, f"hl7 test {control_id}: {answer.code}")
    return {"ok": answer.code in ("AA", "CA"), "message": f"ACK {answer.code} {answer.text}".strip(),
            "control_id": control_id, "seconds": round(time.monotonic() - began, 3)}
