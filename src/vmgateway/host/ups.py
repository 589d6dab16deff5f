"""NUT's configuration for the box's UPS, an APC Back-UPS CS 650 on USB.

upsd listens on loopback only (the gateway and upsmon are its only clients); upsmon shuts the
host down when the UPS reports low battery or forced shutdown, and systemd stops the gateway on
the way, which drains it. The upsmon password is made here, once per rendering, and written to
both files that need it.
"""

from __future__ import annotations

import secrets

from vmgateway.config import PowerConfig

USB_VENDOR_ID, USB_PRODUCT_ID = "051d", "0002"
"""American Power Conversion, Back-UPS series (as `lsusb` lists the CS 650)."""
UPSMON_USER = "upsmon"
SHUTDOWN_COMMAND = "/sbin/shutdown -h +0"
SECRET_FILES = ("upsd.users", "upsmon.conf")
"""Hold the upsmon password: readable by root and the nut group only."""


def nut_files(power: PowerConfig, password: str | None = None) -> dict[str, str]:
    """File name → content, for /etc/nut."""
    password = password or secrets.token_urlsafe(24)
    header = "# Rendered by `vmgateway host render` for the APC Back-UPS CS 650.\n"
    return {
        "nut.conf": header + "MODE=standalone\n",
        "ups.conf": header + (
            "maxretry = 3\n\n"
            f"[{power.ups}]\n"
            "\tdriver = usbhid-ups\n"
            "\tport = auto\n"
            f"\tvendorid = {USB_VENDOR_ID}\n"
            f"\tproductid = {USB_PRODUCT_ID}\n"
            '\tdesc = "APC Back-UPS CS 650"\n'),
        "upsd.conf": header + f"LISTEN 127.0.0.1 {power.nut_port}\nMAXAGE 15\n",
        "upsd.users": header + f"[{UPSMON_USER}]\n\tpassword = {password}\n\tupsmon primary\n",
        "upsmon.conf": header + (
            f"MONITOR {power.ups}@127.0.0.1:{power.nut_port} 1 {UPSMON_USER} {password} primary\n"
            "MINSUPPLIES 1\n"
            f'SHUTDOWNCMD "{SHUTDOWN_COMMAND}"\n'
            "POWERDOWNFLAG /etc/killpower\n"
            "FINALDELAY 5\n"),
    }
