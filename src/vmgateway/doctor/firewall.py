"""Is the firewall the configuration calls for the one the kernel has?

nft prints a loaded table in its own canonical form, which is not the text we render (sets
sorted, ranges merged, `priority filter` spelled out…). So the rendered table is loaded into a
throwaway network namespace — where it can affect nothing — and listed there; the two
listings, handles aside, must be the same. Reading the live table needs root, as does the
namespace; without them the check says it could not look.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import Any

from vmgateway.config import Settings
from vmgateway.doctor.report import Finding, fail, ok, warn
from vmgateway.host.firewall import TABLE, ruleset
from vmgateway.host.render import FIREWALL

CHECK = "firewall"
LIST = ["nft", "-j", "list", "table", "inet", TABLE]
INSTALL = "vmgateway host render --out DIR, then copy DIR/etc into /etc and run: systemctl restart nftables"


def _canonical(listing: str) -> list[dict[str, Any]]:
    """The table's objects without handles and nft's metainfo: what the kernel enforces."""
    objects = []
    for item in json.loads(listing)["nftables"]:
        if "metainfo" in item:
            continue
        ((kind, body),) = item.items()
        objects.append({kind: {key: value for key, value in body.items() if key != "handle"}})
    return objects


def _expected(settings: Settings) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as rendered:
        rendered.write(ruleset(settings))
        rendered.flush()
        loaded = subprocess.run(["unshare", "--net", "sh", "-c", f'nft -f "$1" && {" ".join(LIST)}', "nft",
                                 rendered.name], capture_output=True, text=True, timeout=30)
    if loaded.returncode != 0:
        raise OSError(loaded.stderr.strip() or "unshare/nft failed")
    return loaded.stdout


def check_firewall(settings: Settings) -> Finding:
    try:
        live = subprocess.run(LIST, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return fail(CHECK, "nft is not installed", "apt-get install nftables; then " + INSTALL)
    if live.returncode != 0:
        error = live.stderr.strip().splitlines()[0] if live.stderr.strip() else f"exit {live.returncode}"
        if "Operation not permitted" in error:
            return warn(CHECK, "cannot read the live ruleset (not root)", "run vmgateway doctor as root")
        if "No such file or directory" in error:
            return fail(CHECK, f"table inet {TABLE} is not loaded: every port is open", INSTALL)
        return fail(CHECK, f"the live ruleset cannot be read: {error}", "is nftables supported by this kernel?")
    try:
        expected = _expected(settings)
    except OSError as exc:
        return warn(CHECK, f"table inet {TABLE} is loaded, but could not be compared: {exc}",
                    "run vmgateway doctor as root")
    if _canonical(live.stdout) != _canonical(expected):
        return fail(CHECK, f"table inet {TABLE} differs from what the configuration calls for",
                    f"re-render ({FIREWALL}) and reload it: " + INSTALL)
    return ok(CHECK, f"table inet {TABLE} is loaded and matches the configuration")
