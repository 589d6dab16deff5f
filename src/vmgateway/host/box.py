"""`vmgateway host install`: the gateway's own place on the box, made or put right.

The system user, /etc/vmgateway (0750) with a configuration, the data folder, the units running
upgrade.root's `current` release, `vmgateway` on the PATH, the service enabled and started. Run by
the bundle's first install and safe to run again: each step changes only what differs, and the
command says what it changed, or that nothing did. The firewall, network and UPS files come later,
from the clinic's form (`vmgateway host render`).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path

from vmgateway.files import write_atomically
from vmgateway.host.systemd import RECOVER_UNIT, recover_unit, service_unit
from vmgateway.paths import BOX_CONFIG, BOX_DATA_DIR
from vmgateway.remote_settings import load_settings
from vmgateway.upgrade.layout import Layout

USER = "vmgateway"
UNITS = Path("/etc/systemd/system")
ON_PATH = Path("/usr/local/bin/vmgateway")
FIRST_CONFIG = f"""\
# The Vetmanager Gateway's configuration. Every key not set here has its default (see README.md).
# Fill in the clinic's form with: vmgateway site init

[storage]
data_dir = "{BOX_DATA_DIR}"
"""
Say = Callable[[str], None]


class HostInstallError(Exception):
    """A step could not be done; the message names it. Steps before it stay done (each is safe to redo)."""


def install_on_host(config: str | None, say: Say) -> list[str]:
    """Make the box run the gateway; return what changed (empty: it already did)."""
    if os.geteuid() != 0:
        raise HostInstallError("run it as root")
    changed: list[str] = []
    path = Path(config or BOX_CONFIG)
    _ensure_user(changed)
    _ensure_folder(path.parent, 0o750, 0, _gid(USER), changed)
    if not path.exists():
        write_atomically(path, FIRST_CONFIG, 0o640)
        os.chown(path, 0, _gid(USER))
        changed.append(f"wrote {path}")
    settings = load_settings(path)
    if settings.astm.serial:
        _ensure_in_group("dialout", changed)
    uid = pwd.getpwnam(USER).pw_uid
    _ensure_folder(settings.storage.data_dir, 0o750, uid, _gid(USER), changed)
    layout = Layout(settings.upgrade.root)
    program = layout.current / "venv" / "bin" / "vmgateway"
    if not program.exists():
        raise HostInstallError(f"no release at {layout.current}: install a bundle first (python3 vmgateway-X.pyz"
                               " install)")
    units = {UNITS / "vmgateway.service": service_unit(settings, str(program), str(path)),
             UNITS / RECOVER_UNIT: recover_unit(str(program), str(path), layout.state_file)}
    units_changed = [unit for unit, text in units.items() if _write_if_changed(unit, text, changed)]
    if not (ON_PATH.is_symlink() and os.readlink(ON_PATH) == str(program)):
        ON_PATH.parent.mkdir(parents=True, exist_ok=True)
        ON_PATH.unlink(missing_ok=True)
        ON_PATH.symlink_to(program)
        changed.append(f"linked {ON_PATH} -> {program}")
    if not Path("/run/systemd/system").is_dir():
        say("systemd is not running here: the units are written; start them with systemctl enable --now"
            f" {RECOVER_UNIT} vmgateway")
        return changed
    if units_changed:
        _command("systemctl", "daemon-reload")
    for unit in (RECOVER_UNIT, "vmgateway.service"):
        if subprocess.run(["systemctl", "is-enabled", "--quiet", unit]).returncode:
            _command("systemctl", "enable", unit)
            changed.append(f"enabled {unit}")
    if subprocess.run(["systemctl", "is-active", "--quiet", "vmgateway"]).returncode:
        _command("systemctl", "start", "vmgateway")
        changed.append("started vmgateway")
    elif units_changed:
        _command("systemctl", "restart", "vmgateway")
        changed.append("restarted vmgateway (its unit changed)")
    return changed


def _ensure_user(changed: list[str]) -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        _command("useradd", "--system", "--user-group", "--home-dir", BOX_DATA_DIR, "--no-create-home",
                 "--shell", "/usr/sbin/nologin", "--comment", "Vetmanager Gateway", USER)
        changed.append(f"made the system user {USER}")


def _ensure_in_group(group: str, changed: list[str]) -> None:
    if USER not in grp.getgrnam(group).gr_mem:
        _command("usermod", "--append", "--groups", group, USER)
        changed.append(f"added {USER} to {group} (serial ports are configured)")


def _ensure_folder(path: Path, mode: int, uid: int, gid: int, changed: list[str]) -> None:
    if not path.exists():
        path.mkdir(parents=True)
        changed.append(f"made {path}")
    info = path.stat()
    if (info.st_mode & 0o7777, info.st_uid, info.st_gid) != (mode, uid, gid):
        os.chown(path, uid, gid)
        path.chmod(mode)
        changed.append(f"set {path} to {oct(mode)[2:]} {pwd.getpwuid(uid).pw_name}:{grp.getgrgid(gid).gr_name}")


def _write_if_changed(path: Path, text: str, changed: list[str]) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    write_atomically(path, text, 0o644)
    changed.append(f"wrote {path}")
    return True


def _gid(group: str) -> int:
    return grp.getgrnam(group).gr_gid


def _command(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise HostInstallError(f"{' '.join(command)}: {(done.stderr or done.stdout).strip()}")
