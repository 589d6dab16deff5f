"""The API's own guard, in layers: address allowlist, body size limit, tokens, rate limit.

The allowlist is applied by the listener when a connection is accepted (api/server.py): a
stranger's connection is closed before TLS, and learns nothing about what is behind the port.
The size limit is plain ASGI middleware, so an oversized body is refused before any routing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from vmgateway.addresses import Network, contains, parse_address_set
from vmgateway.api.json_bodies import unsayable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = parse_address_set("127.0.0.1") + parse_address_set("::1")
"""The box itself (its own tools, tests): always allowed. Not all of 127.0.0.0/8."""


async def _refuse(send: Send, status: int, detail: str) -> None:
    await _refuse_json(send, status, {"detail": detail})


async def _refuse_json(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def allowlist(allow: list[str]) -> Callable[[str], bool]:
    """Whether an address may connect to the API: loopback, and the configured address sets."""
    networks: list[Network] = LOOPBACK + [n for entry in allow for n in parse_address_set(entry)]
    return lambda address: contains(networks, address)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media_type = bytes(value).split(b";")[0].strip().lower()
            return media_type == b"application/json" or media_type.endswith(b"+json")
    return False


class BodyLimitMiddleware:
    """413 for request bodies over the limit, whether announced or streamed (chunked); 422 for a
    JSON body that holds what JSON cannot (vmgateway.api.json_bodies).

    The body is read here, whole, before the app sees the request, and handed on from memory: an
    error raised while the app itself reads would become FastAPI's 400 "error parsing the body".
    Bodies are small (at most `api.max_body_bytes`, 64 KiB by default), so holding one costs little.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        if body and _is_json(scope):
            refused = unsayable(bytes(body))
            if refused is not None:
                where, why = refused
                await _refuse_json(send, 422, {"detail": [
                    {"type": "value_error", "loc": ["body", *where], "msg": why, "input": None}]})
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class FailedAuthLimiter:
    """Counts failed token checks per address; past the limit within a minute, answer 429."""

    def __init__(self, limit: int, window_s: float = 60) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # checks run in FastAPI's thread pool

    def blocked(self, address: str) -> bool:
        with self._lock:
            failures = self._failures.get(address)
            if not failures:
                return False
            horizon = time.monotonic() - self.window_s
            while failures and failures[0] < horizon:
                failures.popleft()
            return len(failures) >= self.limit

    def failed(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque()).append(time.monotonic())
            if len(self._failures) > 10000:  # bounded memory under a scan from many addresses
                self._failures.pop(next(iter(self._failures)))
