"""Serves the API with uvicorn inside the gateway's own event loop, over TLS by default."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from vmgateway.api.app import GatewayView, create_app
from vmgateway.api.tls import ensure_self_signed, fingerprint

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The gateway's service owns SIGINT/SIGTERM (it drains everything in order);
        uvicorn would take them over and raise them again after stopping."""
        yield


class ApiServer:
    def __init__(self, view: GatewayView) -> None:
        self.view = view
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

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
            log.info("api certificate", extra={"sha256_fingerprint": fingerprint(cert), "file": str(cert)})
        # Bound here, not by uvicorn: a taken port is then an OSError for the service to report
        # (uvicorn would log it and exit the process).
        listening = socket.create_server((api.bind, api.port))
        config = uvicorn.Config(
            create_app(self.view), host=api.bind, port=api.port, log_config=None, access_log=False,
            lifespan="off", server_header=False, **options,  # type: ignore[arg-type]
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[listening]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it (e.g. the port is taken)
                raise OSError("the API server stopped at start")
            await asyncio.sleep(0.01)
        log.info("api listening", extra={"bind": api.bind, "port": api.port, "tls": api.tls})

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
