"""The gateway's settings as Vetmanager reads and changes them remotely: one path
(vmgateway.remote_settings) for every remote change, the site form's PUTs included.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from vmgateway.api.deps import Caller, Gateway, GatewayView
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.settings import SettingsChanged, SettingsShown
from vmgateway.config import ConfigError
from vmgateway.remote_settings import (
    CHANGEABLE,
    ConflictingChange,
    RefusedChange,
    change,
    described_change,
    read_remote,
    remote_file,
    version_of,
)

router = APIRouter(prefix="/api/v1", tags=["settings"], responses=errors(401, 403, 429))


class SettingsChange(BaseModel):
    changes: dict[str, Any] = Field(min_length=1, max_length=50, description=(
        "Dotted keys (`site.contact.phone`, `pacs`, `transfers.hl7_url`) to their new values; null takes"
        " a key back to what the configuration file says."))
    version: str | None = Field(default=None, max_length=64, description=(
        "The version read with GET /api/v1/settings: the change is refused (409) if another came in between."))


async def apply_change(view: GatewayView, who: str, changes: dict[str, Any], version: str | None) -> dict[str, Any]:
    """Validate, write and apply a remote change, audited; the one path every remote change takes."""
    async with view.changing:
        before = view.settings
        try:
            outcome = await asyncio.to_thread(change, view.settings_file, view.settings.storage.data_dir, changes,
                                              version)
        except RefusedChange as exc:
            raise HTTPException(400, str(exc)) from None
        except ConflictingChange as exc:
            raise HTTPException(409, str(exc)) from None
        except ConfigError as exc:
            raise HTTPException(409, f"the configuration cannot be read: {exc}") from None
        except OSError as exc:
            raise HTTPException(503, f"{remote_file(view.settings.storage.data_dir)} could not be written"
                                     f" ({exc.strerror or exc}); nothing changed") from None
        restart = await view.on_gateway_loop(lambda: view.apply_settings(outcome.settings, outcome.changed))
    view.restart_needed |= set(restart)
    later = f" (at the next start: {', '.join(restart)})" if restart else ""
    await view.audit(who, f"settings changed: {described_change(before, outcome.settings, outcome.changed)}{later}")
    return {"changed": outcome.changed, "restart_needed": restart, "version": outcome.version}


@router.get("/settings", response_model=SettingsShown)
async def get_settings(who: Caller, view: Gateway) -> dict[str, Any]:
    """The configuration the gateway runs with, what Vetmanager changed remotely, and what may change.
    (It holds no secrets: tokens, passwords and keys live in the files it names.)"""
    data_dir = view.settings.storage.data_dir
    remote = await asyncio.to_thread(read_remote, data_dir)
    return {"settings": view.settings.model_dump(mode="json"), "file": view.settings_file,
            "remote_file": str(remote_file(data_dir)), "remote": remote, "version": version_of(data_dir),
            "changeable": list(CHANGEABLE),
            "restart_needed": sorted(view.restart_needed)}


@router.patch("/settings", response_model=SettingsChanged, responses=errors(400, 409, 413, 503))
async def change_settings(request: SettingsChange, who: Caller, view: Gateway) -> dict[str, Any]:
    """Change settings remotely: checked by the configuration's own rules, kept in the data folder's
    remote-settings.toml (laid over the configuration file at every start), applied at once (a push URL
    for a destination the gateway did not start with: at the next start, listed in restart_needed)."""
    return await apply_change(view, who, request.changes, request.version)
