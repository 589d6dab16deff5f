"""Stopping and starting the gateway's service, for an upgrade.

On the box that is systemd (stop = SIGTERM = a drain, as the unit's TimeoutStopSec allows).
Elsewhere — a box without systemd, the tests — upgrade.service = "commands" names a start, a
stop and a status command instead.
"""

from __future__ import annotations

import subprocess
import time
from typing import Protocol

from vmgateway.config import UpgradeConfig

UNIT = "vmgateway.service"
COMMAND_TIMEOUT_S = 600


class ServiceError(Exception):
    pass


class Service(Protocol):
    def stop(self) -> None: ...
    def start(self) -> None: ...
    def running(self) -> bool:
        """False once the started service has exited (or, under systemd, restarted after a crash)."""
        ...
    def log_of_last_start(self) -> str:
        """What the service said since start() was last called."""
        ...


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{what}: {exc}") from None
    return done


def _checked(command: list[str], what: str) -> None:
    done = _run(command, what)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1000:]}")


class Systemd:
    """Each activation of a unit, a restart after a crash included, has its own InvocationID: the
    release on trial runs as long as the one its start made does. (NRestarts cannot tell: systemd
    resets it at every explicit start, so a box that had crashed before an upgrade once looked
    as if the release on trial had stopped.)"""

    START_SEEN_S = 60

    def __init__(self) -> None:
        self._invocation = ""
        self._started_at = time.time()

    def stop(self) -> None:
        _checked(["systemctl", "stop", UNIT], "systemctl stop")

    def start(self) -> None:
        before = self._show("InvocationID")
        self._started_at = time.time()
        _checked(["systemctl", "start", "--no-block", UNIT], "systemctl start")
        deadline = time.monotonic() + self.START_SEEN_S
        while (invocation := self._show("InvocationID")) in ("", before):
            if time.monotonic() > deadline:
                raise ServiceError(f"systemd did not start {UNIT} within {self.START_SEEN_S} s")
            time.sleep(0.1)  # systemd's job queue: nothing to await from here
        self._invocation = invocation

    def running(self) -> bool:
        state = self._show("ActiveState")
        return state in ("active", "activating", "reloading") and self._show("InvocationID") == self._invocation

    def _show(self, name: str) -> str:
        return _run(["systemctl", "show", "-p", name, "--value", UNIT], "systemctl show").stdout.strip()

    def log_of_last_start(self) -> str:
        return _run(["journalctl", "-u", UNIT, "--since", f"@{self._started_at:.0f}", "--no-pager", "-o", "cat"],
                    "journalctl").stdout


class Commands:
    def __init__(self, config: UpgradeConfig) -> None:
        self.config = config
        self._log_offset = 0

    def stop(self) -> None:
        _checked(self.config.stop_command, "the stop command")

    def start(self) -> None:
        log_file = self.config.log_file
        self._log_offset = log_file.stat().st_size if log_file is not None and log_file.exists() else 0
        _checked(self.config.start_command, "the start command")

    def running(self) -> bool:
        return _run(self.config.status_command, "the status command").returncode == 0

    def log_of_last_start(self) -> str:
        log_file = self.config.log_file
        if log_file is None or not log_file.exists():
            return ""
        with log_file.open("rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")


def service_for(config: UpgradeConfig) -> Service:
    return Systemd() if config.service == "systemd" else Commands(config)
