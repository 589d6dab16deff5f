"""What every route of the API depends on: the running gateway, the caller's token, the audit
trail. (No `from __future__ import annotations`: FastAPI reads these annotations at run time.)"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vmgateway.api.security import FailedAuthLimiter
from vmgateway.config import Settings
from vmgateway.lab.orders import LabDesk
from vmgateway.logs import SayingSparingly
from vmgateway.records import Holder
from vmgateway.store import Store

COOKIE = "vmgateway_token"
"""The status page's cookie: the token, HttpOnly, Secure, SameSite=Strict."""

MONITORING_PATHS = ("/api/v1/status", "/api/v1/metrics")
"""All a `monitoring` token may read."""

MAX_ID = 2**63 - 1
"""SQLite's largest integer: IDs beyond it cannot exist (and cannot even be looked up)."""

T = TypeVar("T")


@dataclass
class GatewayView:
    """What the API may know of the running gateway beyond the store."""

    settings: Settings
    store: Store
    started_at: float
    components: Callable[[], dict[str, dict[str, Any]]]
    """The listeners (dicom, hl7, astm): running or stopped, and their last problem."""
    jobs: Callable[[], dict[str, dict[str, Any]]]
    """The background jobs by name: ok / failing (with the error) / …, failures and restarts."""
    power: Callable[[], dict[str, Any]]
    """The UPS as last read (`state` online, on_battery, low_battery, forced_shutdown, unknown or disabled)."""
    destinations: Callable[[], dict[str, dict[str, Any]]]
    """Push destinations by name (dicomweb, hl7): url, state ok/paused, last delivery and error."""
    pacs: Callable[[], dict[str, Any]]
    """The PACS poller's state: off, polling, ok, partial, failing; last poll, success, error."""
    poll_pacs: Callable[[], Awaitable[dict[str, Any]]]
    """Poll the PACS now and return what the poll found."""
    settings_file: str | None = None
    """The configuration file the gateway was started with (None: the embedded defaults)."""
    apply_settings: Callable[[Settings, list[str]], list[str]] = lambda changed, keys: list(keys)
    """Put remote changes into effect, on the gateway's loop; returns the keys that need a restart."""
    instruments: Callable[[], dict[str, dict[str, Any]]] = lambda: {}
    """The lab instruments' senders by name: idle, sending, connected or unreachable; last error."""
    restart_needed: set[str] = field(default_factory=set, init=False)
    """Keys changed remotely since the start that take effect at the next one."""
    changing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    """One remote change at a time: each checks the version it read, then writes."""
    certificate_expires_at: float | None = field(default=None, init=False)
    """When the API's TLS certificate ends (read once at start: a new one needs a restart anyway)."""
    limiter: FailedAuthLimiter = field(init=False)
    lab: LabDesk = field(init=False)
    """Where lab orders are placed, changed and looked up."""
    gateway_loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    """The loop the receivers and jobs run on, when the API runs on a loop of its own."""

    def __post_init__(self) -> None:
        self.limiter = FailedAuthLimiter(self.settings.api.failed_auth_limit)
        self.lab = LabDesk(self.store.lab, self.settings.lab.instruments)

    async def on_gateway_loop(self, call: Callable[[], T]) -> T:
        """`call` run on the gateway's loop, where the receivers' and jobs' state lives and
        changes: the API's own thread only ever sees a consistent copy."""
        loop = self.gateway_loop
        if loop is None or loop is asyncio.get_running_loop():
            return call()
        answer: Future[T] = Future()

        def run() -> None:
            try:
                answer.set_result(call())
            except BaseException as exc:  # handed to the API's side, which raises it
                answer.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return await asyncio.wrap_future(answer)

    def running(self) -> dict[str, Any]:
        """Listeners, jobs, power, PACS poller, push destinations and lab instruments as they are now (copies)."""
        return {"components": self.components(), "jobs": self.jobs(), "power": self.power(),
                "pacs": dict(self.pacs()), "destinations": self.destinations(), "instruments": self.instruments()}

    async def poll_pacs_now(self) -> dict[str, Any]:
        """Poll the PACS now, on the gateway's loop (where the poller runs), and wait for the outcome."""
        loop = self.gateway_loop
        if loop is None or loop is asyncio.get_running_loop():
            return await self.poll_pacs()

        async def poll() -> dict[str, Any]:
            return await self.poll_pacs()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(poll(), loop))

    async def audit(self, who: str, what: str) -> None:
        """Whoever changed or tested something, in the events."""
        await self.store.record_event("audit", f"{who}: {what}")


def gateway(request: Request) -> GatewayView:
    view: GatewayView = request.app.state.view
    return view


Gateway = Annotated[GatewayView, Depends(gateway)]
_bearer = HTTPBearer(auto_error=False)
sign_ins = SayingSparingly(logging.getLogger(__name__))
"""Failed sign-ins: each address said at most once a minute, with how many went unsaid."""


async def identify(view: GatewayView, request: Request, token: str | None) -> Holder | None:
    """Who holds a valid token, or None.

    Only a wrong token is a guess: it is counted per address, logged (address and path, never
    the token), and past `api.failed_auth_limit` in a minute answered 429. A request without a
    token (a browser, a monitoring probe) is not counted, and a valid token is never refused:
    Vetmanager's staff share a few addresses, and one person's mistakes must not lock out the rest.
    """
    if not token:
        return None
    holder = await view.store.tokens.holder(token)
    if holder is not None:
        return holder
    address = request.client.host if request.client else "?"
    blocked = view.limiter.blocked(address)
    view.limiter.failed(address)
    sign_ins.warning("api sign-in failed: unknown token", per=address, address=address, path=request.url.path,
                     rate_limited=blocked)
    if blocked:
        raise HTTPException(429, "too many failed attempts; wait a minute")
    return None


async def caller(request: Request, view: Gateway,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The name of the token presented in the Authorization header; 401 without one, 403 for a
    monitoring token anywhere but status and metrics. The status page's cookie is not one: a browser
    sends it with whatever a page elsewhere makes it send (a form posting `text/plain` to
    /api/v1/transfers/activate once switched transfers with it)."""
    token = credentials.credentials if credentials else None
    holder = await identify(view, request, token)
    if holder is None:
        raise HTTPException(401, "a valid token is needed", headers={"WWW-Authenticate": "Bearer"})
    if holder.scope == "monitoring" and request.url.path not in MONITORING_PATHS:
        raise HTTPException(403, f"token {holder.name!r} is for monitoring: it reads {' and '.join(MONITORING_PATHS)}"
                                 " only")
    return holder.name


Caller = Annotated[str, Depends(caller)]


async def require_active(who: Caller, view: Gateway) -> None:
    """The pull feed is closed (409) until Vetmanager activates transfers; asked only of a
    caller with a valid token (a stranger learns nothing, not even that)."""
    if not await view.store.settings.transfers_active():
        raise HTTPException(409, "transfers are not active: activate them first (POST /api/v1/transfers/activate)")


Active = Depends(require_active)
