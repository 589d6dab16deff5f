"""The HTTP client that talks to Vetmanager's side: TLS verified, credentials from files."""

from __future__ import annotations

import ssl

import httpx

from vmgateway import __version__
from vmgateway.config import TransfersConfig


def tls_context(config: TransfersConfig) -> ssl.SSLContext:
    """Verification always on: the system's CAs, a CA bundle, or one pinned certificate.

    A pinned certificate is made the only trust anchor; VERIFY_X509_PARTIAL_CHAIN lets OpenSSL
    accept it even when it is not self-signed. The host name is checked in every case.
    """
    if config.pinned_cert is not None:
        context = ssl.create_default_context(cafile=str(config.pinned_cert))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    elif config.ca_file is not None:
        context = ssl.create_default_context(cafile=str(config.ca_file))
    else:
        context = ssl.create_default_context()
    if config.client_cert is not None and config.client_key is not None:
        context.load_cert_chain(str(config.client_cert), str(config.client_key))
    return context


def _auth(config: TransfersConfig) -> httpx.Auth | None:
    if config.auth == "basic" and config.password_file is not None:
        return httpx.BasicAuth(config.username, config.password_file.read_text().strip())
    return None


def _headers(config: TransfersConfig) -> dict[str, str]:
    headers = {"User-Agent": f"vmgateway/{__version__}"}
    if config.auth == "bearer" and config.token_file is not None:
        headers["Authorization"] = f"Bearer {config.token_file.read_text().strip()}"
    return headers


def client(config: TransfersConfig) -> httpx.AsyncClient:
    """One client per destination, with a connection per concurrent request kept alive."""
    return httpx.AsyncClient(
        verify=tls_context(config),
        auth=_auth(config),
        headers=_headers(config),
        timeout=httpx.Timeout(config.timeout_s),
        limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment is not ours to use
    )
