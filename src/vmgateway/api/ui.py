"""The status page's routes (not part of the versioned API): sign in, the page, its buttons.
Rendering is in vmgateway.api.page. (No `from __future__ import annotations`: FastAPI reads the
annotations at run time.)"""

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from vmgateway.api import page
from vmgateway.api.checks import EchoRequest, run_echo
from vmgateway.api.deps import COOKIE, MAX_ID, Gateway, GatewayView, identify
from vmgateway.api.gateway import gateway_status
from vmgateway.api.transfers import switch_transfers

PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src {page.STYLE_SOURCE}; form-action 'self';"
                               " frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # it lists owners and animals
    "Referrer-Policy": "same-origin",  # no-referrer makes the page's own forms say `Origin: null`
    "X-Content-Type-Options": "nosniff",
}
"""On every answer of the page: no script, no other style, no framing, nothing kept or told on."""


def _from_the_page(request: Request) -> bool:
    """Whether a POST was sent by the page itself: a browser says where a form came from (Fetch
    Metadata; else Origin, which it sends with every POST), and a form on another site must not
    press the page's buttons with the person's cookie. A request that says neither is no
    browser's (curl, a script holding the token): nothing to forge there."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


class _PageRoute(APIRoute):
    """The page's routes: every answer carries PAGE_HEADERS; a POST from elsewhere is refused (403)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method == "POST" and not _from_the_page(request):
                answer: Response = PlainTextResponse(
                    "Refused: that form was not sent from the gateway's page. / Nekad: formuläret skickades inte"
                    " från gatewayens sida.", status_code=403)
            else:
                answer = await handle(request)
            answer.headers.update(PAGE_HEADERS)
            return answer

        return guarded


router = APIRouter(include_in_schema=False, route_class=_PageRoute)


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
            return PlainTextResponse(f"item_id {chosen[:40]!r} is not an item: a whole number from 1 to {MAX_ID}. /"
                                     f" item_id {chosen[:40]!r} är ingen försändelse: ett heltal från 1 till"
                                     f" {MAX_ID}.", status_code=400)
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
