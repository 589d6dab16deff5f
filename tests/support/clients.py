"""How the tests talk to a gateway as its users do: the API over HTTPS (httpx), its command line
(`vmgateway …`, `vmgateway doctor`), a token made on the box, HL7 samples; and the API app alone,
in-process, for sending thousands of requests."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess
from vmgateway.store import Store

SAMPLES = Path(__file__).parents[1] / "samples" / "hl7"
"""The HL7 messages real lab instruments send, as samples."""


MLLP_SEND = Path(sys.executable).parent / "mllp_send"


def vmgateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmgateway", *args], capture_output=True, text=True, timeout=60)


def new_token(gateway: GatewayProcess, name: str) -> str:
    created = vmgateway("token", "create", name, "--config", str(gateway.config))
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def client(gateway: GatewayProcess, token: str | None = None, **options: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"https://127.0.0.1:{gateway.api_port}", verify=False, headers=headers,
                        timeout=30, **options)


def doctor(config: Path, *skip: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit status, and the findings by check name."""
    flags = [flag for name in skip for flag in ("--skip", name)]
    ran = subprocess.run([sys.executable, "-m", "vmgateway", "doctor", "--config", str(config), "--json", *flags],
                         capture_output=True, text=True, timeout=120)
    findings = json.loads(ran.stdout)
    return ran.returncode, {finding["check"]: finding for finding in findings}


async def _no_poll() -> dict[str, object]:
    return {"ok": False, "error": "no PACS here"}


@contextlib.asynccontextmanager
async def in_process_api(folder: Path, **sections: dict[str, Any]) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """The real API app on a real store in `folder`, served in-process (httpx's ASGI transport, from
    127.0.0.1, no TLS), with a client holding a valid token: for sending thousands of requests fast."""
    from vmgateway.api.app import GatewayView, create_app
    from vmgateway.config import parse_settings

    settings = parse_settings({"storage": {"data_dir": str(folder)}, "power": {"enabled": False}} | sections)
    store = Store(folder, 0)
    store.open()
    try:
        token = store.tokens.create("tester")
        listeners = {name: {"state": "running", "last_problem": None} for name in ("dicom", "hl7", "astm")}
        pacs = {"state": "off", "last_poll_at": None, "last_success_at": None, "last_error": None, "last_result": None,
                "failures_in_a_row": 0, "next_poll_at": None}
        app = create_app(GatewayView(settings, store, time.time(), lambda: listeners, dict,
                                     lambda: {"state": "disabled"}, dict, lambda: pacs, _no_poll))
        transport = httpx.ASGITransport(app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                     headers={"authorization": f"Bearer {token}"}) as api:
            yield api, store
    finally:
        store.close()
