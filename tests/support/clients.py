"""How the tests talk to a running gateway as its users do: the API over HTTPS (httpx), its
command line (`vmgateway …`, `vmgateway doctor`), a token made on the box, HL7 samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess

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
