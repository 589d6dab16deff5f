"""Serves the API with uvicorn, over TLS by default, on an event loop of its own in its own thread.

Why a thread: TLS records, HTTP parsing, routing and JSON of the API are pure Python work on
whichever loop serves them. On the receivers' loop, each request (1–2 ms) sat between an
instrument's message and its ACK: with Vetmanager reading status and the feed 20 times a
second, HL7's ACK p99 at 50 messages/s grew by 2–3 ms (bench/README.md). On a loop of its own
the receivers' loop gets the interpreter back within the switch interval (0.5 ms). What the API
asks of the running gateway is asked on the gateway's loop (GatewayView.on_gateway_loop); the
store is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from vmgateway.admission import Admission, AdmittingListener
from vmgateway.api.app import GatewayView, create_app
from vmgateway.api.security import allowlist
from vmgateway.api.tls import ensure_self_signed, expires_at, fingerprint
from vmgateway.when import when

log = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
"""How long requests still running at stop may take before their connections are cut."""


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The gateway's service owns SIGINT/SIGTERM (it drains everything in order);
        uvicorn would take them over and raise them again after stopping."""
        yield


class _HeadDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's head (request line and
    headers): uvicorn has none, and a client trickling a header a byte at a time held its
    connection for good. The deadline runs from the connection (after TLS) or from the end of the
    previous response; a connection that misses it is cut."""

    head_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's head has arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            log.info("api connection cut: no request within the head timeout",
                     extra={"address": self.client[0] if self.client else None, "head_timeout_s": self.head_timeout_s})
            self.transport.abort()


class ApiServer:
    def __init__(self, view: GatewayView) -> None:
        self.view = view
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Listen; raise OSError when the port cannot be bound."""
        api = self.view.settings.api
        options: dict[str, object] = {}
        if api.tls:
            if api.tls_cert is not None and api.tls_key is not None:
                cert, key = api.tls_cert, api.tls_key
            else:
                name = f"vmgateway {self.view.settings.site.name}".strip()
                cert, key = await ensure_self_signed(self.view.settings.storage.data_dir, name)
            options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
            if api.client_ca is not None:
                options |= {"ssl_ca_certs": str(api.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
            self.view.certificate_expires_at = await expires_at(Path(cert))
            log.info("api certificate", extra={"sha256_fingerprint": fingerprint(cert), "file": str(cert),
                                               "expires": when(self.view.certificate_expires_at)})
        self._say_next_steps(fingerprint(cert) if api.tls else None)
        # Bound here, not by uvicorn: a taken port is then an OSError for the service to report
        # (uvicorn would log it and exit the process); and the listener applies the allowlist
        # and the connection shares at accept, before a TLS handshake costs anything.
        admission = Admission("api", allowlist(api.allow), api.max_connections_per_peer, api.max_connections)
        listening = AdmittingListener.bound(api.bind, api.port, admission)
        protocol = type("HeadDeadline", (_HeadDeadline,), {"head_timeout_s": api.head_timeout_s})
        config = uvicorn.Config(
            create_app(self.view), host=api.bind, port=api.port, log_config=None, access_log=False,
            lifespan="off", server_header=False, http=protocol, **options,  # type: ignore[arg-type]
        )
        self.view.gateway_loop = asyncio.get_running_loop()
        server = self._server = _Server(config)
        ended: Future[None] = Future()

        async def serve_here() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[listening])

        def serve() -> None:
            try:
                asyncio.run(serve_here())
            except BaseException as exc:  # reported to start() or, later, logged
                ended.set_exception(exc)
            else:
                ended.set_result(None)

        self._thread = threading.Thread(target=serve, name="api", daemon=True)
        self._thread.start()
        while not server.started:
            if ended.done():
                ended.result()  # raises what stopped it
                raise OSError("the API server stopped at start")
            await asyncio.sleep(0.01)
        ended.add_done_callback(self._ended)
        log.info("api listening", extra={"bind": api.bind, "port": api.port, "tls": api.tls})

    def _say_next_steps(self, certificate_sha256: str | None) -> None:
        """Once at start, what a person setting the box up does next (the log is what they see)."""
        api = self.view.settings.api
        scheme = "https" if api.tls else "http"
        log.info("next steps", extra={
            "create_a_token": "vmgateway token create NAME (on the box, as root)",
            "status_page": f"{scheme}://THIS-BOX:{api.port}/ (sign in with the token)",
            "certificate_sha256": certificate_sha256,
            "page_reachable_from": ["127.0.0.1", "::1", *api.allow],
            "from_another_address": f"add it to api.allow, or tunnel: ssh -L {api.port}:127.0.0.1:{api.port}"
                                    f" root@THIS-BOX and open {scheme}://127.0.0.1:{api.port}/",
        })

    @staticmethod
    def _ended(ended: Future[None]) -> None:
        if ended.exception() is not None:
            log.error("api server stopped", extra={"error": str(ended.exception())})

    async def stop(self) -> None:
        """Stop serving; connections still open after STOP_GRACE_S are cut.

        Without the cut, one idle keep-alive TLS client held every stop for 30 s: closing a TLS
        connection waits for the client's close_notify up to asyncio's ssl_shutdown_timeout,
        which uvicorn does not let us set — and on a UPS with little runtime left those 30 s
        are the difference between a clean stop and a cut.
        """
        thread, server = self._thread, self._server
        if server is None or thread is None:
            return
        server.should_exit = True
        await asyncio.to_thread(thread.join, STOP_GRACE_S)
        if thread.is_alive() and self._loop is not None:
            log.info("api connections cut at stop", extra={"connections": len(server.server_state.connections)})
            self._loop.call_soon_threadsafe(_cut_connections, server)
            await asyncio.to_thread(thread.join, STOP_GRACE_S)
        if thread.is_alive():
            log.error("api server did not stop; leaving it behind")
        self._thread = None


def _cut_connections(server: uvicorn.Server) -> None:
    """On the API's loop: abort every connection's transport (no TLS close handshake)."""
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
