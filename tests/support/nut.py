"""A real NUT server for tests: Debian's dummy-ups driver and upsd on 127.0.0.1.

dummy-ups plays a UPS from a text file; upsrw changes a variable at once (the file would
take a poll interval). Both daemons run in the foreground, as children of the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.gateway import free_port, stop_process

NUT_BIN = Path("/lib/nut")
UPS = "backups"
ADMIN, ADMIN_PASSWORD = "admin", "test-only"
START_TIMEOUT_S = 20

BACK_UPS_CS_650 = {
    "ups.status": "OL",
    "battery.charge": "100",
    "battery.charge.low": "10",
    "battery.charge.warning": "50",
    "battery.runtime": "1800",
    "battery.runtime.low": "120",
    "input.voltage": "230.0",
    "ups.load": "12",
}
"""Variables of the box's UPS, as a public NUT device dump lists them."""


class _Daemon:
    """A foreground NUT daemon whose stderr is watched for a line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, after: int = 0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(text in line for line in self.lines[after:]), START_TIMEOUT_S):
                raise AssertionError(f"NUT daemon did not say {text!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        stop_process(self.proc)


class NutServer:
    def __init__(self, variables: dict[str, str] | None = None, rendered: Path | None = None,
                 port: int | None = None) -> None:
        """`rendered`: a folder of NUT configuration made by `vmgateway host render`, used as it
        is except that the driver is dummy-ups instead of usbhid-ups (there is no UPS on USB here);
        its upsd.conf then decides the port (`port` must say which)."""
        # Short path: the driver's Unix socket lives here, and such paths have a 108-byte limit.
        self.folder = Path(tempfile.mkdtemp(prefix="nut-"))
        self.folder.chmod(0o700)
        self.port = port or free_port()
        self.env = os.environ | {"NUT_CONFPATH": str(self.folder), "NUT_STATEPATH": str(self.folder)}
        self._as_user = ["-u", "root"] if os.geteuid() == 0 else []
        self._writable = rendered is None
        driver = f"[{UPS}]\n  driver = dummy-ups\n  port = {UPS}.dev\n  mode = dummy-once\n"
        if rendered is None:
            (self.folder / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\nSTATEPATH {self.folder}\n")
            (self.folder / "upsd.users").write_text(
                f"[{ADMIN}]\n  password = {ADMIN_PASSWORD}\n  actions = SET FSD\n  instcmds = ALL\n")
        else:
            for name in ("nut.conf", "upsd.conf", "upsd.users", "upsmon.conf"):
                shutil.copy(rendered / name, self.folder / name)
            assert "driver = usbhid-ups" in (rendered / "ups.conf").read_text()
        (self.folder / "ups.conf").write_text(driver)
        for name in ("ups.conf", "upsd.conf", "upsd.users"):
            (self.folder / name).chmod(0o600)
        (self.folder / f"{UPS}.dev").write_text(
            "".join(f"{k}: {v}\n" for k, v in (BACK_UPS_CS_650 | (variables or {})).items()))
        self.driver: _Daemon | None = None
        self.upsd: _Daemon | None = None

    def start(self) -> NutServer:
        self.start_driver()
        self.start_upsd()
        if self._writable:
            self._wait_writable()
        else:
            self._wait_published()
        return self

    def _wait_published(self) -> None:
        """Until the driver's first data reach upsd, ups.status reads WAIT; nothing announces
        the change, so ask (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            answer = self.ask(f"GET VAR {UPS} ups.status")
            if answer.startswith(f"VAR {UPS} ups.status".encode()) and b'"WAIT"' not in answer:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dummy-ups never published its data: {answer!r}")
            time.sleep(0.05)

    def _wait_writable(self) -> None:
        """dummy-ups marks its variables writable about a second after upsd connects; until
        then upsrw gets ERR READONLY. Nothing announces it, so ask (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"RW backups ups.status" not in self.ask(f"LIST RW {UPS}"):
            if time.monotonic() > deadline:
                raise AssertionError("dummy-ups never made ups.status writable")
            time.sleep(0.05)

    def ask(self, command: str) -> bytes:
        """One command to upsd, its whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(command.encode() + b"\nLOGOUT\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    def start_driver(self) -> None:
        self.driver = _Daemon([str(NUT_BIN / "dummy-ups"), "-F", "-a", UPS, *self._as_user], self.env)
        # The driver says nothing when ready; its socket appearing is the sign (no event to wait on).
        socket_path = self.folder / f"dummy-ups-{UPS}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not socket_path.exists():
            if time.monotonic() > deadline or self.driver.proc.poll() is not None:
                raise AssertionError("dummy-ups did not start:\n" + "\n".join(self.driver.lines))
            time.sleep(0.02)

    def start_upsd(self) -> None:
        self.upsd = _Daemon([str(NUT_BIN / "upsd"), "-F", *self._as_user], self.env)
        self.upsd.wait_for(f"Connected to UPS [{UPS}]")

    def stop_driver(self) -> None:
        assert self.driver is not None
        self.driver.stop()

    def stop_upsd(self) -> None:
        if self.upsd is not None:
            self.upsd.stop()

    def set(self, variable: str, value: str) -> None:
        """Change a variable through upsd (upsrw): visible at once to every client."""
        subprocess.run(
            ["upsrw", "-s", f"{variable}={value}", "-u", ADMIN, "-p", ADMIN_PASSWORD, "-w", f"{UPS}@127.0.0.1:{self.port}"],
            check=True, capture_output=True, timeout=10,
        )

    def stop(self) -> None:
        for daemon in (self.upsd, self.driver):
            if daemon is not None:
                daemon.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
