"""The API's own guard, in layers: address allowlist, body size limit, tokens, rate limit.

The allowlist and the size limit are plain ASGI middleware, so a stranger is turned away
before any routing: a bare 403 that tells nothing about what is behind it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from vmgateway.addresses import Network, contains, parse_address_set

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = parse_address_set("127.0.0.1") + parse_address_set("::1")
"""The box itself (its own tools, tests): always allowed. Not all of 127.0.0.0/8."""


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AllowlistMiddleware:
    """403 for every address outside the allowlist (loopback is always allowed)."""

    def __init__(self, app: ASGIApp, allow: list[str]) -> None:
        self.app = app
        self.networks: list[Network] = LOOPBACK + [n for entry in allow for n in parse_address_set(entry)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            try:
                allowed = client is not None and contains(self.networks, client[0])
            except ValueError:
                allowed = False
            if not allowed:
                await _refuse(send, 403, "forbidden")
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for request bodies over the limit, whether announced or streamed."""

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
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await _refuse(send, 413, f"request body over {self.max_bytes} bytes")


class BodyTooLarge(Exception):
    pass


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
