"""The clinic's form as Vetmanager sees and changes it, and polling its PACS on demand.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

from typing import Any

from fastapi import APIRouter

from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.site import PollOutcome, Site
from vmgateway.api.settings import apply_change
from vmgateway.config import ContactConfig, PacsConfig

router = APIRouter(prefix="/api/v1", tags=["site"], responses=errors(401, 403, 429))


def _site_form(view: GatewayView) -> dict[str, Any]:
    """The site form as the gateway runs with it (the contact and PACS as last changed remotely)."""
    return {"site": view.settings.site.model_dump(mode="json"), "pacs": view.settings.pacs.model_dump(mode="json")}


@router.get("/site", response_model=Site)
async def get_site(who: Caller, view: Gateway) -> dict[str, Any]:
    """The clinic's form. IP addresses and the router option are set at provisioning, not here."""
    return _site_form(view)


@router.put("/site/contact", response_model=Site, responses=errors(400, 409, 413, 503))
async def change_contact(contact: ContactConfig, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change the clinic's contact person (at once, and kept: PATCH /api/v1/settings with
    `site.contact`); the whole form is returned."""
    await apply_change(view, who, {"site.contact": contact.model_dump(mode="json")}, None)
    return _site_form(view)


@router.put("/site/pacs", response_model=Site, responses=errors(400, 409, 413, 503))
async def change_pacs(pacs: PacsConfig, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change the PACS to poll (replaces [pacs] of the configuration, at once, and kept); the whole
    form is returned."""
    await apply_change(view, who, {"pacs": pacs.model_dump(mode="json")}, None)
    return _site_form(view)


@router.post("/pacs/poll", response_model=PollOutcome, response_model_exclude_none=True)
async def poll_pacs(who: Caller, view: Gateway) -> dict[str, Any]:
    """Poll the clinic's PACS now (whether or not pacs.poll is on) and say what was found and fetched."""
    result = await view.poll_pacs_now()
    await view.audit(who, f"PACS polled: {result}")
    return result
