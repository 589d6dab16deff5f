"""Living under systemd: the notify protocol and the unit file.

sd_notify(3) is one datagram on the socket in $NOTIFY_SOCKET, so a few lines here replace a
dependency on libsystemd or a wrapper package.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from vmgateway.config import Settings

log = logging.getLogger(__name__)


class Notifier:
    """Tells systemd READY, STOPPING and WATCHDOG; does nothing when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path  # "@": abstract namespace
        self.watchdog_interval_s: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2e6  # ping twice per period, as sd_watchdog_enabled advises
        self._failed = False

    def send(self, *assignments: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                # Never block the event loop: a reader that does not keep up loses a ping, not the gateway.
                sock.send("\n".join(assignments).encode(), socket.MSG_DONTWAIT)
        except OSError as exc:
            if not self._failed:  # once: a broken socket must not flood the log every ping
                log.warning("cannot notify systemd", extra={"error": str(exc)})
                self._failed = True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def keep_alive(self) -> None:
        """Ping the watchdog from the event loop until cancelled: if the loop hangs, the pings
        stop and systemd restarts the service."""
        if self.watchdog_interval_s is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)


def service_unit(settings: Settings, executable: str, config: str) -> str:
    """The unit for these settings: systemd's stop timeout outlasts the longest drain, or it
    would kill a clean stop half-way."""
    drains = (settings.dicom.drain_timeout_s, settings.hl7.drain_timeout_s, settings.power.drain_timeout_s)
    return unit_file(executable, config, max(drains) + 30, [port.device for port in settings.astm.serial])


RECOVER_UNIT = "vmgateway-upgrade-recover.service"


def recover_unit(executable: str, config: str, state_file: Path) -> str:
    """At boot, before the gateway: settle an upgrade a reboot cut off (a release left on trial
    is rolled back), so the box never stays on a release that listens on loopback only."""
    return f"""\
[Unit]
Description=Vetmanager Gateway: settle an upgrade cut off by a reboot
Before=vmgateway.service
ConditionPathExists={state_file}

[Service]
Type=oneshot
ExecStart={executable} upgrade --recover --boot --config {config}
TimeoutStartSec=600

[Install]
WantedBy=multi-user.target
"""


def _serial_lines(devices: list[str]) -> str:
    """The configured serial ports, and nothing else of /dev: each is bound into the private /dev
    and allowed by the device policy, and the group that owns serial ports on Debian is added.
    A port that is absent at start ("-") does not stop the unit: DICOM and HL7 must still run,
    and the ASTM receiver says the port cannot be opened. (A device plugged in later is not in the
    private /dev until the next start; `vmgateway host install` restarts the unit when it changes.)"""
    if not devices:
        return ""
    lines = ["SupplementaryGroups=dialout"]
    for device in devices:
        lines += [f"BindPaths=-{device}", f"DeviceAllow={device} rw"]
    return "\n".join(lines) + "\n"


def unit_file(executable: str, config: str, stop_timeout_s: float, serial_devices: list[str]) -> str:
    """The service unit: Type=notify, watchdog, hardened, no capabilities (all ports > 1024).

    `Restart=always` also brings the gateway back when it drained for a power failure and the
    host was not shut down after all; during a host shutdown systemd restarts nothing. It comes
    back within 2 s of a crash (modalities are refused while it is down); the start limit ends a
    crash loop in `failed` (20 starts in 5 minutes), which `systemctl status` and doctor show.
    """
    return f"""\
[Unit]
Description=Vetmanager Gateway (DICOM and HL7 for Vetmanager)
Documentation=https://vetmanager.se
Wants=network-online.target
After=network-online.target nut-server.service {RECOVER_UNIT}
StartLimitIntervalSec=300
StartLimitBurst=20

[Service]
Type=notify
NotifyAccess=main
ExecStart={executable} run --config {config}
User=vmgateway
Group=vmgateway
StateDirectory=vmgateway
StateDirectoryMode=0750
WorkingDirectory=/var/lib/vmgateway
Restart=always
RestartSec=2
WatchdogSec=30
TimeoutStartSec=120
TimeoutStopSec={int(stop_timeout_s)}
KillMode=mixed
UMask=0027
LimitNOFILE=8192
MemoryMax=1G

NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
{_serial_lines(serial_devices)}ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""
