"""The management API (FastAPI), versioned under /api/v1/, and the status page at `/`.

One router per concept — the gateway as a whole, the pull feed, transfers, the worklist, the
site, commissioning tests, the page — each reading and writing only through the store, and
learning about the running receivers only through the `GatewayView` the service hands it
(vmgateway.api.deps). The body size guard needs no routing and wraps the whole app; who may
connect at all is decided by the listener (api/server.py).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from vmgateway import __version__
from vmgateway.api import checks, feed, gateway, lab, settings, site, transfers, ui, worklist
from vmgateway.api.deps import GatewayView
from vmgateway.api.security import BodyLimitMiddleware
from vmgateway.charsets import LONE_SURROGATE

__all__ = ["GatewayView", "create_app"]


def _operation_id(route: APIRoute) -> str:
    """The route function's name (get_item, list_feed, acknowledge_items): what a generated client
    calls its functions, rather than FastAPI's `get_item_api_v1_items__item_id__get`."""
    return route.name


def _printable(value: Any) -> Any:
    """`value` with every lone surrogate replaced by U+FFFD and every NaN or infinity said in words,
    at any depth: an answer that echoed one (a 422 names the input it refused) failed as a 500."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or Infinity
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value


async def _refused_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (the same `detail` list: where, what, the input), sayable whatever was sent."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors()))}, status_code=422)


def create_app(view: GatewayView) -> Any:
    api = FastAPI(title="vmgateway management API", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None, generate_unique_id_function=_operation_id)
    api.state.view = view
    api.add_exception_handler(RequestValidationError, _refused_request)
    for module in (gateway, site, settings, checks, worklist, lab, transfers, feed, ui):
        api.include_router(module.router)
    app: Any = BodyLimitMiddleware(api, view.settings.api.max_body_bytes)
    app.fastapi = api  # for the OpenAPI document
    return app
