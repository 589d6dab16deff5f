"""The management API (FastAPI), versioned under /api/v1/.

It reads and writes only through the store, and learns about the running receivers through
the small `GatewayView` the service hands it. (No `from __future__ import annotations` here:
FastAPI reads the dependency annotations at run time.)
"""


import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from pydicom.uid import generate_uid

from vmgateway import __version__
from vmgateway.addresses import local_address
from vmgateway.api import page
from vmgateway.api.metrics import metrics_text
from vmgateway.api.security import AllowlistMiddleware, BodyLimitMiddleware, FailedAuthLimiter
from vmgateway.astm.records import ASTM_MEDIA_TYPE, parse
from vmgateway.astm.to_hl7 import to_oru
from vmgateway.config import AETitle, ContactConfig, PacsConfig, Settings
from vmgateway.dicom.echo import echo
from vmgateway.hl7.charsets import hl7_content_type
from vmgateway.hl7.client import send_messages, test_message
from vmgateway.pacs.poller import effective_pacs
from vmgateway.store import Store, deliveries
from vmgateway.store import feed as feed_reads
from vmgateway.store import worklist as worklist_reads
from vmgateway.store.access import SITE_PACS, get_setting, set_setting, token_owner, transfers_active
from vmgateway.store.records import mark_delivered, record_event
from vmgateway.worklist.entry import WorklistEntry

SITE_CONTACT = "site.contact"
HEALTH_CHECKED_AT = "health.deep_checked_at"
COOKIE = "vmgateway_token"
_CHUNK = 1 << 20


@dataclass
class GatewayView:
    """What the API may know of the running gateway beyond the store."""

    settings: Settings
    store: Store
    started_at: float
    components: Callable[[], dict[str, dict[str, Any]]]
    power: Callable[[], dict[str, Any]]
    """The UPS as last read (`state` online, on_battery, low_battery, forced_shutdown, unknown or disabled)."""
    destinations: Callable[[], dict[str, dict[str, Any]]]
    """Push destinations by name (dicomweb, hl7): url, state ok/paused, last delivery and error."""
    pacs: Callable[[], dict[str, Any]]
    """The PACS poller's state: off, polling, ok, partial, failing; last poll, success, error."""
    poll_pacs: Callable[[], Awaitable[dict[str, Any]]]
    """Poll the PACS now and return what the poll found."""


class EchoRequest(BaseModel):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    called_ae: AETitle = "ANY-SCP"
    calling_ae: AETitle | None = None


MAX_ID = 2**63 - 1
"""SQLite's largest integer: IDs beyond it cannot exist (and cannot even be looked up)."""
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class RetryRequest(BaseModel):
    item_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(default=None, min_length=1, max_length=10000)


class AckRequest(BaseModel):
    item_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=10000)


def create_app(view: GatewayView) -> Any:
    api = FastAPI(title="vmgateway management API", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None)
    bearer = HTTPBearer(auto_error=False)
    limiter = FailedAuthLimiter(view.settings.api.failed_auth_limit)
    store = view.store

    def reading() -> Iterator[Any]:
        with store.reading() as conn:
            yield conn

    Reader = Annotated[Any, Depends(reading)]

    def identify(request: Request, token: str | None) -> str | None:
        """The name of a valid token; failures are counted per address (429 past the limit)."""
        address = request.client.host if request.client else "?"
        if limiter.blocked(address):
            raise HTTPException(429, "too many failed attempts; wait a minute")
        name = None
        if token:
            with store.reading() as conn:
                name = token_owner(conn, token)
        if name is None:
            limiter.failed(address)
        return name

    def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        """The name of the token presented (header or the status page's cookie); 401 without one."""
        token = credentials.credentials if credentials else request.cookies.get(COOKIE)
        name = identify(request, token)
        if name is None:
            raise HTTPException(401, "a valid token is needed", headers={"WWW-Authenticate": "Bearer"})
        return name

    Caller = Annotated[str, Depends(caller)]

    def require_active(conn: Any) -> None:
        if not transfers_active(conn):
            raise HTTPException(409, "transfers are not active: activate them first (POST /api/v1/transfers/activate)")

    async def audit(who: str, what: str) -> None:
        await asyncio.to_thread(store.journal.write, record_event("audit", f"{who}: {what}", time.time()))

    @api.get("/api/v1/health", tags=["gateway"])
    async def health(deep: bool = False) -> dict[str, str]:
        """Liveness: the only endpoint that needs no token. `deep=true` also has the journal take a
        write (committed, fsync'ed): what an upgrade's health check asks of a new release."""
        if not deep:
            return {"status": "ok"}
        try:
            await asyncio.to_thread(store.journal.write, set_setting(HEALTH_CHECKED_AT, str(time.time())), 10)
        except Exception as exc:  # any failure to write is the answer
            raise HTTPException(503, f"the journal did not take a write: {exc}") from None
        return {"status": "ok", "journal": "written"}

    def gateway_status(conn: Any) -> dict[str, Any]:
        disk = shutil.disk_usage(view.settings.storage.data_dir)
        queued = conn.execute("SELECT count(*) FROM items WHERE state != 'delivered'").fetchone()[0]
        by_kind = {row[0]: {"items": row[1], "bytes": row[2]}
                   for row in conn.execute("SELECT kind, count(*), sum(size) FROM items GROUP BY kind")}
        components = view.components() | {
            "power": view.power(),
            "pacs": view.pacs(),
            "transfers": transfers_state(conn),
            "disk": {"state": "ok" if disk.free >= view.settings.storage.min_free_mb * 2**20 else "full",
                     "free_mb": disk.free // 2**20, "min_free_mb": view.settings.storage.min_free_mb},
        }
        return {
            "version": __version__,
            "site": view.settings.site.name,
            "uptime_s": round(time.time() - view.started_at, 1),
            "components": components,
            "transfers_active": transfers_active(conn),
            "queue": {"undelivered": queued},
            "received": by_kind,
        }

    async def switch_transfers(who: str, active: bool) -> None:
        await asyncio.to_thread(store.switch_transfers, active)
        await audit(who, "transfers activated" if active else "transfers deactivated")

    @api.get("/api/v1/status", tags=["gateway"])
    def status(who: Caller, conn: Reader) -> dict[str, Any]:
        return gateway_status(conn)

    def site_form(conn: Any) -> dict[str, Any]:
        """The site form as configured, with the contact and PACS as last changed here."""
        site = view.settings.site.model_dump(mode="json")
        site["contact"] = json.loads(get_setting(conn, SITE_CONTACT, json.dumps(site["contact"])))
        return {"site": site, "pacs": effective_pacs(conn, view.settings.pacs).model_dump(mode="json")}

    @api.get("/api/v1/site", tags=["site"])
    def site(who: Caller, conn: Reader) -> dict[str, Any]:
        """The clinic's form. IP addresses and the router option are set at provisioning, not here."""
        return site_form(conn)

    async def change_site(who: str, key: str, value: BaseModel) -> dict[str, Any]:
        await asyncio.to_thread(store.journal.write, set_setting(key, value.model_dump_json()))
        await audit(who, f"{key} changed to {value.model_dump_json()}")
        with store.reading() as conn:
            return site_form(conn)

    @api.put("/api/v1/site/contact", tags=["site"])
    async def change_contact(contact: ContactConfig, who: Caller) -> dict[str, Any]:
        return await change_site(who, SITE_CONTACT, contact)

    @api.put("/api/v1/site/pacs", tags=["site"])
    async def change_pacs(pacs: PacsConfig, who: Caller) -> dict[str, Any]:
        return await change_site(who, SITE_PACS, pacs)

    @api.post("/api/v1/tests/hl7", tags=["tests"])
    async def hl7_test(who: Caller) -> dict[str, Any]:
        """A test message (MSH-11 = T) sent to the gateway's own HL7 listener, and its ACK."""
        control_id, message = test_message("VMGATEWAY-TEST", view.settings.site.name)
        began = time.monotonic()
        try:
            hl7 = view.settings.hl7
            [answer] = await asyncio.to_thread(send_messages, local_address(hl7.bind), hl7.port, [message], 10)
        except (OSError, ConnectionError) as exc:
            await audit(who, f"hl7 test: {exc}")
            return {"ok": False, "message": f"no answer from the HL7 listener: {exc}", "seconds": None}
        await audit(who, f"hl7 test {control_id}: {answer.code}")
        return {"ok": answer.code in ("AA", "CA"), "message": f"ACK {answer.code} {answer.text}".strip(),
                "control_id": control_id, "seconds": round(time.monotonic() - began, 3)}

    @api.post("/api/v1/pacs/poll", tags=["site"])
    async def poll_pacs(who: Caller) -> dict[str, Any]:
        """Poll the clinic's PACS now (whether or not pacs.poll is on) and say what was found and fetched."""
        result = await view.poll_pacs()
        await audit(who, f"PACS polled: {result}")
        return result

    async def keep_entry(entry: WorklistEntry, create: bool) -> bool:
        if not entry.study_instance_uid:
            with store.reading() as conn:
                known = worklist_reads.entry(conn, entry.order_id)
            fixed = json.loads(known["entry"])["study_instance_uid"] if known else ""
            entry = entry.model_copy(update={"study_instance_uid": fixed or generate_uid()})
        expires_at = entry.scheduled_at.timestamp() + view.settings.worklist.keep_days * 86400
        return bool(await asyncio.to_thread(store.journal.write, worklist_reads.put_entry(
            entry.order_id, entry.accession_number, entry.study_instance_uid, entry.scheduled_at.isoformat(),
            entry.model_dump_json(), time.time(), expires_at, create)))

    def shown_entry(row: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in row.items() if key != "entry"} | {"entry": json.loads(row["entry"])}

    @api.post("/api/v1/worklist", tags=["worklist"], status_code=201)
    async def create_worklist_entry(entry: WorklistEntry, who: Caller) -> dict[str, Any]:
        """Schedule an examination: the modality finds it in the worklist (Study Instance UID made
        here unless given)."""
        if not await keep_entry(entry, create=True):
            raise HTTPException(409, f"order {entry.order_id} is on the worklist already: PUT to change it")
        await audit(who, f"worklist: order {entry.order_id} scheduled")
        with store.reading() as conn:
            return shown_entry(worklist_reads.entry(conn, entry.order_id) or {})

    @api.put("/api/v1/worklist/{order_id}", tags=["worklist"])
    async def update_worklist_entry(order_id: str, entry: WorklistEntry, who: Caller) -> dict[str, Any]:
        """Change an entry (a cancelled one is scheduled again)."""
        if entry.order_id != order_id:
            raise HTTPException(409, f"the body's order_id {entry.order_id!r} is not {order_id!r}")
        if not await keep_entry(entry, create=False):
            raise HTTPException(404, f"order {order_id} is not on the worklist")
        await audit(who, f"worklist: order {order_id} changed")
        with store.reading() as conn:
            return shown_entry(worklist_reads.entry(conn, order_id) or {})

    @api.delete("/api/v1/worklist/{order_id}", tags=["worklist"])
    async def cancel_worklist_entry(order_id: str, who: Caller) -> dict[str, Any]:
        """Take an entry off the worklist (kept as cancelled until it expires)."""
        if not await asyncio.to_thread(store.journal.write, worklist_reads.cancel_entry(order_id, time.time())):
            raise HTTPException(404, f"order {order_id} is not on the worklist")
        await audit(who, f"worklist: order {order_id} cancelled")
        return {"order_id": order_id, "state": "cancelled"}

    entry_states = "^(scheduled|in_progress|performed|cancelled)$"

    @api.get("/api/v1/worklist", tags=["worklist"])
    def list_worklist(who: Caller, conn: Reader, state: Annotated[str | None, Query(pattern=entry_states)] = None,
                      ) -> list[dict[str, Any]]:
        """Entries not yet expired, by scheduled time. `in_progress`: a modality reported the step
        started (MPPS); `performed`: images arrived for it, or the step was reported completed."""
        return [shown_entry(row) for row in worklist_reads.entries(conn, time.time(), state)]

    @api.get("/api/v1/worklist/{order_id}", tags=["worklist"])
    def worklist_entry(order_id: str, who: Caller, conn: Reader) -> dict[str, Any]:
        row = worklist_reads.entry(conn, order_id)
        if row is None:
            raise HTTPException(404, f"order {order_id} is not on the worklist")
        return shown_entry(row)

    @api.get("/api/v1/devices", tags=["tests"])
    def devices(who: Caller, conn: Reader) -> list[dict[str, Any]]:
        """Every DICOM calling AE / address and HL7 sender seen, with first/last contact."""
        return feed_reads.senders(conn)

    @api.post("/api/v1/tests/echo", tags=["tests"])
    async def echo_test(request: EchoRequest, who: Caller) -> dict[str, Any]:
        """C-ECHO from the gateway to a PACS or modality."""
        return await run_echo(who, request)

    async def run_echo(who: str, request: EchoRequest) -> dict[str, Any]:
        began = time.monotonic()
        calling = request.calling_ae or view.settings.dicom.ae_title
        result = await asyncio.to_thread(echo, request.host, request.port, calling, request.called_ae, 10)
        await audit(who, f"echo {request.called_ae}@{request.host}:{request.port}: {result.message}")
        return {"ok": result.ok, "message": result.message, "seconds": round(time.monotonic() - began, 3)}

    def transfers_state(conn: Any) -> dict[str, Any]:
        queue = deliveries.queue_summary(conn)
        destinations = view.destinations()
        paused = any(d["state"] == "paused" for d in destinations.values())
        dead = sum(kind["dead"] for kind in queue.values())
        state = "inactive" if not transfers_active(conn) else "attention" if paused or dead else "active"
        return {"state": state, "mode": view.settings.transfers.mode, "destinations": destinations,
                "waiting": sum(kind["waiting"] for kind in queue.values()), "dead": dead, "queue": queue}

    @api.get("/api/v1/transfers", tags=["transfers"])
    def transfers(who: Caller, conn: Reader) -> dict[str, Any]:
        """Whether transfers are active; in push mode each destination's state; items waiting and dead."""
        return {"active": transfers_active(conn)} | transfers_state(conn)

    @api.get("/api/v1/transfers/dead", tags=["transfers"])
    def dead(who: Caller, conn: Reader, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Items given up on (refused transfers.max_attempts times, or undeliverable for transfers.max_age_h)."""
        found = deliveries.dead_items(conn, after, limit)
        return {"items": found, "next": found[-1]["id"] if found else after}

    @api.post("/api/v1/transfers/retry", tags=["transfers"])
    async def retry(request: RetryRequest, who: Caller) -> dict[str, Any]:
        """Put dead items back in the queue (all of them when item_ids is left out)."""
        revived = await asyncio.to_thread(store.journal.write, deliveries.revive(request.item_ids))
        await audit(who, f"retried {len(revived)} dead item(s)")
        return {"retried": revived}

    @api.post("/api/v1/transfers/activate", tags=["transfers"])
    async def activate(who: Caller) -> dict[str, bool]:
        await switch_transfers(who, True)
        return {"active": True}

    @api.post("/api/v1/transfers/deactivate", tags=["transfers"])
    async def deactivate(who: Caller) -> dict[str, bool]:
        await switch_transfers(who, False)
        return {"active": False}

    @api.get("/api/v1/feed", tags=["feed"])
    def feed(who: Caller, conn: Reader, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100, undelivered: bool = True) -> dict[str, Any]:
        """Items received after the cursor `after` (an item ID), oldest first."""
        require_active(conn)
        items = feed_reads.items_after(conn, after, limit, undelivered)
        return {"items": items, "next": items[-1]["id"] if items else after}

    @api.get("/api/v1/studies", tags=["feed"])
    def studies(who: Caller, conn: Reader, after: str = "",
                limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        """Complete studies (quiet for dicom.stable_after_s) with their instances' item IDs."""
        require_active(conn)
        quiet_since = time.time() - view.settings.dicom.stable_after_s
        found = feed_reads.complete_studies(conn, quiet_since, after, limit)
        return {"studies": found, "next": found[-1]["study_instance_uid"] if found else after}

    @api.get("/api/v1/items/{item_id}", tags=["feed"])
    def item(item_id: ItemId, who: Caller, conn: Reader) -> dict[str, Any]:
        require_active(conn)
        found = feed_reads.item(conn, item_id)
        if found is None:
            raise HTTPException(404, f"no item {item_id}")
        return found[0]

    @api.get("/api/v1/items/{item_id}/content", tags=["feed"], response_model=None)
    def content(item_id: ItemId, who: Caller, conn: Reader) -> FileResponse | StreamingResponse:
        """The item's bytes exactly as received: DICOM as a Part 10 file (Range supported),
        HL7 and ASTM as the raw message (ASTM: its records, CR-separated, as the frames carried them)."""
        require_active(conn)
        found = feed_reads.item(conn, item_id)
        if found is None:
            raise HTTPException(404, f"no item {item_id}")
        record, spool_path = found
        if record["kind"] == "dicom":
            if spool_path is None:
                raise HTTPException(410, f"item {item_id} was delivered and its file removed"
                                         " (storage.keep_delivered_days)")
            return FileResponse(store.spool.root / spool_path, media_type="application/dicom",
                                filename=f"{record['dicom']['sop_instance_uid']}.dcm")
        if record["kind"] == "astm":
            media_type = ASTM_MEDIA_TYPE
        else:
            media_type = hl7_content_type(record["hl7"]["charset_used"], record["hl7"]["charset"])
        return StreamingResponse(_payload_chunks(store, item_id), media_type=media_type,
                                 headers={"content-length": str(record["size"])})

    @api.get("/api/v1/items/{item_id}/hl7", tags=["feed"], response_class=PlainTextResponse)
    def as_hl7(item_id: ItemId, who: Caller, conn: Reader) -> PlainTextResponse:
        """An ASTM item as the equivalent HL7 v2.5 ORU^R01 (UTF-8; the mapping is in
        vmgateway/astm/to_hl7.py). The content endpoint keeps the raw original."""
        require_active(conn)
        found = feed_reads.item(conn, item_id)
        if found is None:
            raise HTTPException(404, f"no item {item_id}")
        if found[0]["kind"] != "astm":
            raise HTTPException(409, f"item {item_id} is {found[0]['kind']}, not ASTM")
        message = to_oru(parse(store.payload(item_id)), item_id, view.settings.site.name)
        return PlainTextResponse(message, media_type=hl7_content_type("UNICODE UTF-8", "UNICODE UTF-8"))

    @api.post("/api/v1/feed/ack", tags=["feed"])
    async def acknowledge(request: AckRequest, who: Caller) -> dict[str, Any]:
        """Mark items as delivered (taken by Vetmanager)."""
        with store.reading() as conn:
            require_active(conn)
        changed = await asyncio.to_thread(store.journal.write, mark_delivered(request.item_ids, time.time()))
        if changed:
            await audit(who, f"acknowledged {len(changed)} item(s)")
        return {"delivered": changed}

    @api.get("/api/v1/events", tags=["gateway"])
    def events(who: Caller, conn: Reader, before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        """Events, newest first; page with `before` = the last ID seen."""
        found = feed_reads.events(conn, before, limit)
        return {"events": found, "next": found[-1]["id"] if found else None}

    @api.get("/api/v1/metrics", tags=["gateway"], response_class=PlainTextResponse)
    def metrics(who: Caller, conn: Reader) -> PlainTextResponse:
        """Prometheus text format."""
        body, content_type = metrics_text(conn, view.settings.storage.data_dir, view.components(), view.power())
        return PlainTextResponse(body, media_type=content_type)

    # --- the status page (not part of the versioned API) ---

    def page_user(request: Request) -> str | None:
        token = request.cookies.get(COOKIE)
        return identify(request, token) if token else None

    async def form(request: Request) -> dict[str, str]:
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        return {key: values[0] for key, values in fields.items()}

    def see_page() -> RedirectResponse:
        return RedirectResponse("/", status_code=303)

    @api.get("/", include_in_schema=False, response_class=HTMLResponse)
    def home(request: Request, echo_result: str = "") -> HTMLResponse:
        if page_user(request) is None:
            return HTMLResponse(page.sign_in())
        with store.reading() as conn:
            last = conn.execute("SELECT max(received_at) FROM items").fetchone()[0]
            return HTMLResponse(page.status_page(gateway_status(conn), feed_reads.senders(conn), last, echo_result))

    @api.post("/signin", include_in_schema=False, response_model=None)
    async def signin(request: Request) -> HTMLResponse | RedirectResponse:
        token = (await form(request)).get("token", "")
        if identify(request, token) is None:
            return HTMLResponse(page.sign_in("That token is not valid / Ogiltig nyckel"), status_code=401)
        answer = see_page()
        answer.set_cookie(COOKIE, token, httponly=True, secure=view.settings.api.tls, samesite="strict")
        return answer

    @api.post("/signout", include_in_schema=False)
    def signout() -> RedirectResponse:
        answer = see_page()
        answer.delete_cookie(COOKIE)
        return answer

    @api.post("/ui/transfers/{action}", include_in_schema=False)
    async def ui_transfers(action: str, request: Request) -> RedirectResponse:
        who = page_user(request)
        if who is None or action not in ("activate", "deactivate"):
            return see_page()
        await switch_transfers(who, action == "activate")
        return see_page()

    @api.post("/ui/echo", include_in_schema=False, response_model=None)
    async def ui_echo(request: Request) -> HTMLResponse | RedirectResponse:
        who = page_user(request)
        if who is None:
            return see_page()
        fields = await form(request)
        try:
            wanted = EchoRequest(host=fields.get("host", ""), port=int(fields.get("port", "0")),
                                 called_ae=fields.get("called_ae") or "ANY-SCP")
        except (ValueError, ValidationError) as exc:
            return await asyncio.to_thread(home, request, f"Echo not sent: {exc}".splitlines()[0])
        result = await run_echo(who, wanted)
        return await asyncio.to_thread(home, request, result["message"])

    app: Any = BodyLimitMiddleware(api, view.settings.api.max_body_bytes)
    app = AllowlistMiddleware(app, view.settings.api.allow)
    app.fastapi = api  # for the OpenAPI document
    return app


def _payload_chunks(store: Store, item_id: int) -> Iterator[bytes]:
    """An HL7 payload read from the journal in pieces: never the whole message at once."""
    with store.reading() as conn:
        with conn.blobopen("payloads", "data", item_id, readonly=True) as blob:
            while chunk := blob.read(_CHUNK):
                yield chunk
