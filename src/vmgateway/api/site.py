"""The clinic's form as Vetmanager sees and changes it, and polling its PACS on demand.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

import json
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas import PollOutcome, Site, errors
from vmgateway.config import ContactConfig, PacsConfig
from vmgateway.pacs.poller import effective_pacs
from vmgateway.store.access import SITE_CONTACT, SITE_PACS

router = APIRouter(prefix="/api/v1", tags=["site"], responses=errors(401, 403, 429))


async def _site_form(view: GatewayView) -> dict[str, Any]:
    """The site form as configured, with the contact and PACS as last changed here."""
    site = view.settings.site.model_dump(mode="json")
    site["contact"] = json.loads(await view.store.settings.get(SITE_CONTACT, json.dumps(site["contact"])))
    return {"site": site, "pacs": (await effective_pacs(view.store, view.settings.pacs)).model_dump(mode="json")}


async def _change(view: GatewayView, who: str, key: str, value: BaseModel) -> dict[str, Any]:
    await view.store.settings.put(key, value.model_dump_json())
    await view.audit(who, f"{key} changed to {value.model_dump_json()}")
    return await _site_form(view)


@router.get("/site", response_model=Site)
async def get_site(who: Caller, view: Gateway) -> dict[str, Any]:
    """The clinic's form. IP addresses and the router option are set at provisioning, not here."""
    return await _site_form(view)


@router.put("/site/contact", response_model=Site, responses=errors(413))
async def change_contact(contact: ContactConfig, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change the clinic's contact person; the whole form is returned."""
    return await _change(view, who, SITE_CONTACT, contact)


@router.put("/site/pacs", response_model=Site, responses=errors(413))
async def change_pacs(pacs: PacsConfig, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change the PACS to poll (replaces [pacs] of the configuration); the whole form is returned."""
    return await _change(view, who, SITE_PACS, pacs)


@router.post("/pacs/poll", response_model=PollOutcome, response_model_exclude_none=True)
async def poll_pacs(who: Caller, view: Gateway) -> dict[str, Any]:
    """Poll the clinic's PACS now (whether or not pacs.poll is on) and say what was found and fetched."""
    result = await view.poll_pacs_now()
    await view.audit(who, f"PACS polled: {result}")
    return result
