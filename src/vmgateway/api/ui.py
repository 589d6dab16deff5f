"""The status page's routes (not part of the versioned API): sign in, the page, its buttons.
Rendering is in vmgateway.api.page. (No `from __future__ import annotations`: FastAPI reads the
annotations at run time.)"""

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from pydantic import ValidationError

from vmgateway.api import page
from vmgateway.api.checks import EchoRequest, run_echo
from vmgateway.api.deps import COOKIE, MAX_ID, Gateway, GatewayView, identify
from vmgateway.api.gateway import gateway_status
from vmgateway.api.transfers import switch_transfers

router = APIRouter(include_in_schema=False)


async def _user(view: GatewayView, request: Request) -> str | None:
    """The signed-in person's token name; None without a cookie, or with a monitoring token (it may
    not sign in: the page switches transfers and sends echoes)."""
    token = request.cookies.get(COOKIE)
    holder = await identify(view, request, token) if token else None
    return holder.name if holder is not None and holder.scope == "all" else None


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


def _see_page() -> RedirectResponse:
    return RedirectResponse("/", status_code=303)


async def _status_page(view: GatewayView, echo_result: str = "") -> HTMLResponse:
    status = await gateway_status(view)
    devices = await view.store.feed.senders()
    dead = await view.store.deliveries.dead_items(0, page.DEAD_SHOWN)
    newest = await view.store.feed.newest_items(page.NEWEST_SHOWN)
    return HTMLResponse(page.status_page(status, devices, status["last_received_at"], echo_result, dead, newest))


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, view: Gateway) -> HTMLResponse:
    if await _user(view, request) is None:
        return HTMLResponse(page.sign_in())
    return await _status_page(view)


@router.post("/signin", response_model=None)
async def signin(request: Request, view: Gateway) -> HTMLResponse | RedirectResponse:
    token = (await _form(request)).get("token", "")
    holder = await identify(view, request, token)
    if holder is None:
        return HTMLResponse(page.sign_in("That token is not valid / Ogiltig nyckel"), status_code=401)
    if holder.scope != "all":
        return HTMLResponse(page.sign_in("That token is for monitoring only / Nyckeln är bara för övervakning"),
                            status_code=403)
    answer = _see_page()
    answer.set_cookie(COOKIE, token, httponly=True, secure=view.settings.api.tls, samesite="strict")
    return answer


@router.post("/signout")
def signout() -> RedirectResponse:
    answer = _see_page()
    answer.delete_cookie(COOKIE)
    return answer


@router.post("/ui/transfers/retry", response_model=None)
async def ui_retry(request: Request, view: Gateway) -> RedirectResponse | PlainTextResponse:
    """The page's retry buttons: one dead item (`item_id`), or all of them. (Declared before
    /ui/transfers/{action}, which would take the path otherwise.)"""
    who = await _user(view, request)
    if who is not None:
        chosen = (await _form(request)).get("item_id", "")
        if chosen and not _an_item_id(chosen):  # "-1" or "1e3" once meant "retry every dead item"
            return PlainTextResponse(f"item_id {chosen[:40]!r} is not an item: a whole number from 1 to {MAX_ID}",
                                     status_code=400)
        revived = await view.store.deliveries.revive([int(chosen)] if chosen else None)
        await view.audit(who, f"retried {len(revived)} dead item(s)")
    return _see_page()


def _an_item_id(text: str) -> bool:
    """ASCII digits naming an ID the journal can hold ("²" is a digit to str.isdigit, not to int)."""
    return len(text) <= len(str(MAX_ID)) and text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ID


@router.post("/ui/transfers/{action}")
async def ui_transfers(action: str, request: Request, view: Gateway) -> RedirectResponse:
    who = await _user(view, request)
    if who is not None and action in ("activate", "deactivate"):
        await switch_transfers(view, who, action == "activate")
    return _see_page()


@router.post("/ui/echo", response_model=None)
async def ui_echo(request: Request, view: Gateway) -> HTMLResponse | RedirectResponse:
    who = await _user(view, request)
    if who is None:
        return _see_page()
    fields = await _form(request)
    try:
        wanted = EchoRequest(host=fields.get("host", ""), port=int(fields.get("port", "0")),
                             called_ae=fields.get("called_ae") or "ANY-SCP")
    except (ValueError, ValidationError) as exc:
        return await _status_page(view, f"Echo not sent: {exc}".splitlines()[0])
    result = await run_echo(view, who, wanted)
    return await _status_page(view, result["message"])
