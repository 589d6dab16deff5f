"""`vmgateway host render`: every host file the box needs, from its configuration, into a folder
laid out like the root file system (so that `cp -a OUT/. /` installs it)."""

from __future__ import annotations

import grp
import os
from pathlib import Path

from vmgateway.config import ConfigError, Settings
from vmgateway.files import write_atomically
from vmgateway.host.firewall import ruleset
from vmgateway.host.network import network_files
from vmgateway.host.systemd import RECOVER_UNIT, recover_unit, service_unit
from vmgateway.host.ups import SECRET_FILES, nut_files
from vmgateway.site.form import form_problems
from vmgateway.upgrade.layout import Layout

FIREWALL = Path("etc/nftables.d/vmgateway.nft")
NFTABLES_CONF = Path("etc/nftables.conf")
NETWORK_DIR = Path("etc/systemd/network")
NUT_DIR = Path("etc/nut")
UNIT = Path("etc/systemd/system/vmgateway.service")
RECOVER = Path("etc/systemd/system") / RECOVER_UNIT


def render_host(settings: Settings, out: Path, executable: str, config: str) -> list[Path]:
    """Write the files; ConfigError (nothing written) when the clinic's form is not complete."""
    problems = form_problems(settings)
    if problems:
        raise ConfigError("the clinic's form is not complete (vmgateway site init):\n  " + "\n  ".join(problems))
    files: dict[Path, str] = {
        FIREWALL: ruleset(settings),
        # Debian's nftables.service loads this file at boot; it holds nothing but our table.
        NFTABLES_CONF: f'#!/usr/sbin/nft -f\ninclude "/{FIREWALL}"\n',
        UNIT: service_unit(settings, executable, config),
        RECOVER: recover_unit(executable, config, Layout(settings.upgrade.root).state_file),
    }
    files |= {NETWORK_DIR / name: text for name, text in network_files(settings.site).items()}
    files |= {NUT_DIR / name: text for name, text in nut_files(settings.power).items()}
    written = []
    for relative, text in files.items():
        secret = relative.parent == NUT_DIR and relative.name in SECRET_FILES
        path = out / relative
        write_atomically(path, text, 0o640 if secret else 0o644)
        if secret:
            _give_to_nut(path)
        written.append(path)
    return written


def _give_to_nut(path: Path) -> None:
    """upsd and upsmon read their password as group nut; where that group exists, let them."""
    try:
        os.chown(path, -1, grp.getgrnam("nut").gr_gid)
    except (KeyError, PermissionError):
        pass  # no NUT here, or not root: whoever installs the files sets the group
