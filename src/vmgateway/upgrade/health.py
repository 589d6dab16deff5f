"""The deep health check a release on trial must pass: every part that keeps the promise works.

The DICOM listener answers a C-ECHO, the HL7 listener ACKs a test message (processing ID T:
it is kept and delivered like any message, so Vetmanager sees each upgrade's probe), the journal
takes a committed write, the API answers. All on loopback — during a trial the listeners listen
nowhere else (vmgateway.upgrade.trial).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from vmgateway.addresses import local_address
from vmgateway.config import Settings
from vmgateway.dicom.echo import echo_own_listener
from vmgateway.hl7.client import send_messages, test_message
from vmgateway.store.schema import MIGRATION_MARKER
from vmgateway.upgrade.service import Service

UPGRADE_AE = "VMGW_UPGRADE"
STEP_TIMEOUT_S = 10
POLL_S = 1.0


def deep_problems(settings: Settings) -> list[str]:
    """What does not work yet; empty when everything does."""
    problems = []
    answer = echo_own_listener(settings.dicom, UPGRADE_AE, STEP_TIMEOUT_S)
    if not answer.ok:
        problems.append(f"DICOM: {answer.message}")
    _, message = test_message("VMGATEWAY-UPGRADE", settings.site.name)
    try:
        [ack] = send_messages(local_address(settings.hl7.bind), settings.hl7.port, [message], STEP_TIMEOUT_S)
        if ack.code not in ("AA", "CA"):
            problems.append(f"HL7: the test message was answered {ack.code} {ack.text}".strip())
    except (OSError, ConnectionError, ValueError) as exc:
        problems.append(f"HL7: {exc}")
    api = settings.api
    url = api.local_url("/api/v1/health")
    try:
        # Our own API on loopback: its certificate is pinned by Vetmanager, not by us.
        answer_api = httpx.get(url, params={"deep": "true"}, verify=False, timeout=STEP_TIMEOUT_S, trust_env=False)
        if answer_api.status_code != 200 or answer_api.json().get("journal") != "written":
            problems.append(f"API/journal: HTTP {answer_api.status_code} {answer_api.text[:300]}")
    except (httpx.HTTPError, ValueError) as exc:
        problems.append(f"API: {exc}")
    return problems


def listening_problems(settings: Settings) -> list[str]:
    """After a restart of a release already known to be healthy: is it back (C-ECHO)?"""
    answer = echo_own_listener(settings.dicom, UPGRADE_AE, STEP_TIMEOUT_S)
    return [] if answer.ok else [f"DICOM: {answer.message}"]


def wait_healthy(settings: Settings, service: Service,
                 check: Callable[[Settings], list[str]] = deep_problems) -> list[str]:
    """Until `check` finds nothing (→ []), or the service exits, or the deadline passes (→ what failed).

    The deadline is upgrade.health_timeout_s, extended while the journal is being migrated (a
    marker file says so) up to upgrade.migration_timeout_s: a long migration is not a failure.
    """
    config = settings.upgrade
    started = time.monotonic()
    deadline = started + config.health_timeout_s
    marker = settings.journal_path.with_name(MIGRATION_MARKER)
    problems = ["not yet checked"]
    while True:
        if not service.running():
            return ["the service stopped running"] + [p for p in problems if p != "not yet checked"]
        if marker.exists():
            deadline = max(deadline, min(time.monotonic() + config.health_timeout_s,
                                         started + config.migration_timeout_s))
        else:
            problems = check(settings)
            if not problems:
                return []
        if time.monotonic() > deadline:
            return problems
        time.sleep(POLL_S)  # another process: nothing to await but its answers
