"""The gateway as a whole: health, status, events, metrics.
(No `from __future__ import annotations`: FastAPI reads the annotations at run time.)"""

import shutil
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from vmgateway import __version__
from vmgateway.api.deps import MAX_ID, Caller, Gateway, GatewayView
from vmgateway.api.metrics import metrics_text
from vmgateway.api.schemas.base import errors
from vmgateway.api.schemas.status import Events, Health, Status
from vmgateway.clock import clock_synchronised
from vmgateway.identity import identity
from vmgateway.overall import Facts, assess
from vmgateway.records import ItemCounts, LabQueue
from vmgateway.store.access import GATEWAY_ID, HEALTH_CHECKED_AT

router = APIRouter(prefix="/api/v1", tags=["gateway"])
_TOKEN = errors(401, 403, 429)


@router.get("/health", response_model=Health, response_model_exclude_none=True, responses=errors(503))
async def get_health(view: Gateway, deep: bool = False) -> dict[str, str]:
    """Liveness: the only endpoint that needs no token. `deep=true` also has the journal take a
    write (committed, fsync'ed): what an upgrade's health check asks of a new release."""
    if not deep:
        return {"status": "ok"}
    try:
        await view.store.settings.put(HEALTH_CHECKED_AT, str(time.time()))
    except Exception as exc:  # any failure to write is the answer
        raise HTTPException(503, f"the journal did not take a write: {exc}") from None
    return {"status": "ok", "journal": "written"}


async def transfers_state(view: GatewayView, destinations: dict[str, dict[str, Any]] | None = None,
                          ) -> dict[str, Any]:
    """Whether transfers are active, each push destination, items waiting and dead."""
    active = await view.store.settings.transfers_active()
    queue = await view.store.deliveries.queue_summary()
    if destinations is None:
        destinations = await view.on_gateway_loop(view.destinations)
    paused = any(d["state"] == "paused" for d in destinations.values())
    dead = sum(kind.dead for kind in queue.values())
    state = "inactive" if not active else "attention" if paused or dead else "active"
    return {"active": active, "state": state, "mode": view.settings.transfers.mode, "destinations": destinations,
            "waiting": sum(kind.waiting for kind in queue.values()), "dead": dead,
            "queue": {kind: asdict(waiting) for kind, waiting in queue.items()}}


_FAILING = frozenset({"stopped", "failing"})
"""Component states that make the overall state `attention` (a listener down, a job or poll failing)."""


async def gateway_status(view: GatewayView, counts: ItemCounts | None = None) -> dict[str, Any]:
    """What /api/v1/status, the page and the metrics show: the overall state (vmgateway.overall),
    every component and job, queue and totals."""
    disk = shutil.disk_usage(view.settings.storage.data_dir)
    counts = counts if counts is not None else await view.store.feed.counts()
    running = await view.on_gateway_loop(view.running)
    transfers = await transfers_state(view, running["destinations"])
    oldest = await view.store.deliveries.oldest_waiting_at()
    disk_low = disk.free < view.settings.storage.min_free_mb * 2**20
    components = running["components"] | {f"job:{name}": job for name, job in running["jobs"].items()} | {
        "power": running["power"],
        "pacs": running["pacs"],
        "transfers": {key: value for key, value in transfers.items() if key != "active"},
        "disk": {"state": "full" if disk_low else "ok",
                 "free_mb": disk.free // 2**20, "min_free_mb": view.settings.storage.min_free_mb},
        "journal": asdict(view.store.journal_state()),
    }
    now = time.time()
    facts = Facts(
        commissioned=await view.store.settings.commissioned(), transfers_active=transfers["active"],
        waiting=transfers["waiting"], dead=transfers["dead"],
        oldest_waiting_s=None if oldest is None else max(0.0, now - oldest),
        max_wait_s=view.settings.transfers.max_wait_s, destinations=running["destinations"],
        power=running["power"].get("state"), disk_low=disk_low, clock_synchronised=clock_synchronised(),
        failing=[name for name, c in components.items() if c.get("state") in _FAILING])
    return {
        "version": __version__,
        "site": view.settings.site.name,
        "identity": identity(view.settings, await view.store.settings.get(GATEWAY_ID, "") or None, view.started_at),
        "overall": assess(facts).as_dict(),
        "uptime_s": round(now - view.started_at, 1),
        "components": components,
        "transfers_active": transfers["active"],
        "queue": {"undelivered": counts.undelivered, "oldest_waiting_at": oldest},
        "received": {kind: asdict(totals) for kind, totals in counts.by_kind.items()},
        "last_received_at": counts.last_received_at,
        "clock_synchronised": facts.clock_synchronised,
        "api_certificate_expires_at": view.certificate_expires_at,
        "lab": await _instruments(view, running["instruments"]),
    }


async def _instruments(view: GatewayView, senders: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each configured analyzer: its sender's state beside what its queue holds."""
    queues = await view.store.lab.summary()
    return {name: sender | asdict(queues.get(name, LabQueue())) for name, sender in senders.items()}


@router.get("/status", response_model=Status, responses=_TOKEN)
async def get_status(who: Caller, view: Gateway) -> dict[str, Any]:
    """Every component (listeners, background jobs as `job:NAME`, power, PACS, transfers, disk)."""
    return await gateway_status(view)


@router.get("/events", response_model=Events, responses=_TOKEN | errors(400))
async def list_events(who: Caller, view: Gateway, before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
                 kind: Annotated[str | None, Query(min_length=1, max_length=32, pattern="^[a-z_]+$")] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, object]:
    """Events (start, stop, recovery, power, power_drain, dead, pacs_fetch, audit…), of one `kind` if
    given. Backwards, newest first: page with `before` = the last ID seen. Forwards, to follow them
    as they come: `after` = the last ID seen (0 from the start), oldest first. `next` is the cursor
    for the next page in the same direction."""
    if before is not None and after is not None:
        raise HTTPException(400, "before or after, not both")
    found = await view.store.feed.events(before, after, kind, limit)
    return {"events": found, "next": found[-1].id if found else after}


@router.get("/metrics", response_class=PlainTextResponse, responses=_TOKEN)
async def get_metrics(who: Caller, view: Gateway) -> PlainTextResponse:
    """Prometheus text format."""
    counts = await view.store.feed.counts()
    body, content_type = metrics_text(counts, await gateway_status(view, counts))
    return PlainTextResponse(body, media_type=content_type)
