"""An HTTP(S) endpoint that misbehaves on purpose, for the HL7 sink (it has no real counterpart).

It answers each request with the next step of a script — a status (with headers), a slow
answer, a dropped connection — and, when the script is used up, with the default step. Every
request is recorded with its arrival time.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.certificates import Issued


@dataclass
class Step:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0
    drop: bool = False
    """Close the connection without an answer."""
    hold: threading.Event | None = None
    """Answer only once this is set (at most a minute): an upload that stays under way."""


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    def __init__(self, script: list[Step] | None = None, default: Step | None = None,
                 tls: Issued | None = None, client_ca: str | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Step()
        self.received: list[Received] = []
        self.changed = threading.Condition()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with upstream.changed:
                    step = upstream.script.pop(0) if upstream.script else upstream.default
                    upstream.received.append(Received(time.monotonic(), self.path, dict(self.headers), body))
                    upstream.changed.notify_all()
                if step.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                time.sleep(step.delay_s)  # a slow upstream, on the server's own thread
                if step.hold is not None:
                    step.hold.wait(60)
                self.send_response(step.status)
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_OPTIONS = do_POST  # noqa: N815 (a probe such as vmgateway doctor's gets the script too)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            if client_ca:
                context.load_verify_locations(client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hl7"

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} request(s), not {count}, within {timeout} s")
            return list(self.received)
