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
from vmgateway.model import OWN_TEST_AE_PREFIX, OWN_TEST_APPLICATION_PREFIX
from vmgateway.store.schema import MIGRATION_MARKER
from vmgateway.upgrade.service import Service

UPGRADE_AE = f"{OWN_TEST_AE_PREFIX}UPGRADE"
STEP_TIMEOUT_S = 10
POLL_S = 1.0


def listening_problems(settings: Settings) -> list[str]:
    """Is the release there at all (C-ECHO)? Also all that is asked after a restart of a release
    already known to be healthy."""
    answer = echo_own_listener(settings.dicom, UPGRADE_AE, STEP_TIMEOUT_S)
    return [] if answer.ok else [f"DICOM: {answer.message}"]


def deep_problems(settings: Settings) -> list[str]:
    """What does not work yet; empty when everything does. The HL7 probe goes last, once the rest
    works: it is kept as a message, and a check repeated every second must not keep one each time."""
    problems = listening_problems(settings) + _api_problems(settings)
    return problems or _hl7_problems(settings)


def _api_problems(settings: Settings) -> list[str]:
    try:
        # Our own API on loopback: its certificate is pinned by Vetmanager, not by us.
        answer = httpx.get(settings.api.local_url("/api/v1/health"), params={"deep": "true"}, verify=False,
                           timeout=STEP_TIMEOUT_S, trust_env=False)
        if answer.status_code != 200 or answer.json().get("journal") != "written":
            return [f"API/journal: HTTP {answer.status_code} {answer.text[:300]}"]
    except (httpx.HTTPError, ValueError) as exc:
        return [f"API: {exc}"]
    return []


def _hl7_problems(settings: Settings) -> list[str]:
    _, message = test_message(f"{OWN_TEST_APPLICATION_PREFIX}UPGRADE", settings.site.name)
    try:
        [ack] = send_messages(local_address(settings.hl7.bind), settings.hl7.port, [message], STEP_TIMEOUT_S)
    except (OSError, ConnectionError, ValueError) as exc:
        return [f"HL7: {exc}"]
    if ack.code not in ("AA", "CA"):
        return [f"HL7: the test message was answered {ack.code} {ack.text}".strip()]
    return []


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
