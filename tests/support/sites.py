"""Filled-in forms for each of the four router set-ups (documentation addresses only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONTACT = ["--contact-name", "Åsa Öberg", "--contact-phone", "+46 70 123 45 67", "--contact-email", "asa@example.se"]

FORMS: dict[int, list[str]] = {
    1: ["--name", "Djurkliniken i Åby", "--router-option", "1", "--external-ip", "198.51.100.10",
        "--wan-network", "198.51.100.0/24", "--router-ip", "198.51.100.1", "--lan-network", "192.168.1.0/24",
        *CONTACT],
    2: ["--name", "Smådjurskliniken", "--router-option", "2", "--external-ip", "203.0.113.10",
        "--wan-network", "203.0.113.8/29", "--router-ip", "203.0.113.9", "--internal-ip", "192.168.10.20",
        "--lan-network", "192.168.10.0/24", *CONTACT],
    3: ["--name", "Hästkliniken", "--router-option", "3", "--external-ip", "203.0.113.50",
        "--internal-ip", "10.1.2.20", "--lan-network", "10.1.0.0/16", "--router-ip", "10.1.0.1",
        "--dns", "10.1.0.53, 10.1.0.54", *CONTACT],
    4: ["--name", "Veterinären", "--router-option", "4", "--external-ip", "203.0.113.77",
        "--internal-ip", "192.168.0.20", "--lan-network", "192.168.0.0/24", "--router-ip", "192.168.0.1",
        "--pacs-host", "192.168.0.30", "--pacs-port", "11112", "--pacs-ae-title", "CLINIC_PACS", *CONTACT],
}


def init(config: Path, *flags: str, answers: str | None = None) -> subprocess.CompletedProcess[str]:
    asking = ["--ask"] if answers is not None else ["--no-ask"]
    return subprocess.run([sys.executable, "-m", "vmgateway", "site", "init", "--config", str(config), *asking,
                           "--lang", "en", *flags], input=answers or "", capture_output=True, text=True, timeout=60)
