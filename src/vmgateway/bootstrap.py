"""What `python3 vmgateway-<version>.pyz` does on a box: install the first release, offline.

Runs from inside the bundle with the system python and its standard library only. It changes
nothing until every check has passed (the bundle is whole, signed by a key the box trusts or is
told to trust, built for this machine and Python; the box can make a venv and has room), then
installs the release beside nothing, points `current` at it, and hands over to the installed
release's `vmgateway host install` for the user, folders, configuration and units. Run again, it
changes nothing and says so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from vmgateway.bundle import signature
from vmgateway.bundle.manifest import Bundle, BundleError, read_bundle
from vmgateway.bundle.trust import UntrustedKey, trust, trusted_keys
from vmgateway.files import free_mb
from vmgateway.paths import TRUSTED_KEYS
from vmgateway.upgrade.install import InstallError, install_bundle
from vmgateway.upgrade.layout import Layout
from vmgateway.upgrade.state import UpgradeState

RELEASES_ROOT = Path("/opt/vmgateway")
ROOM_FACTOR = 4
"""A release's venv takes about three times its wheels; the fourth is for the unpacked wheels."""
VENV_TIMEOUT_S = 300


class Refused(Exception):
    """The install did not start; nothing was changed."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 vmgateway-<version>.pyz",
                                     description="A signed vmgateway release bundle.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = commands.add_parser("install", help="install this release on a new box (as root, offline)")
    install.add_argument("--trust", metavar="PUB.pem",
                         help="the public key the bundle must be signed with (openssl pkey -pubout); it is added"
                         f" to {TRUSTED_KEYS}")
    verify = commands.add_parser("verify", help="check the bundle and show its version, signer and contents;"
                                 " exit 0 only when a trusted key signed it")
    verify.add_argument("--trust", metavar="PUB.pem", help="the key it must be signed with (default: the box's"
                        f" trusted keys, {TRUSTED_KEYS})")
    args = parser.parse_args(argv)
    path = Path(sys.argv[0]).resolve()
    try:
        bundle = read_bundle(path)
        if args.command == "verify":
            print(describe(bundle), end="")
            print(f"trusted   {_check_signer(bundle, Path(args.trust) if args.trust else None)}")
            return 0
        return _install(bundle, Path(args.trust) if args.trust else None)
    except (BundleError, Refused, UntrustedKey) as exc:
        said = "not verified" if args.command == "verify" else "install refused, nothing changed"
        print(f"vmgateway: {said}: {exc}", file=sys.stderr)
        return 2
    except InstallError as exc:
        print(f"vmgateway: the release could not be installed: {exc}", file=sys.stderr)
        return 1


def describe(bundle: Bundle) -> str:
    """What `bundle verify` shows: enough for a person to decide whether to install it."""
    manifest = bundle.manifest
    signer = signature.fingerprint(bundle.signer) if bundle.signer else "NOT SIGNED"
    lines = [f"release   {manifest.version}", f"for       {manifest.platform}, Python {manifest.python}",
             f"signed by {signer}", f"file      {bundle.path}", "wheels:"]
    lines += [f"  {name.removeprefix('wheels/')}" for name in manifest.wheels]
    return "\n".join(lines) + "\n"


def _given_key(trust_file: Path) -> bytes:
    try:
        return signature.public_key_from_pem(trust_file.read_text())
    except (OSError, UnicodeDecodeError, signature.NotAPublicKey) as exc:
        raise Refused(f"--trust {trust_file}: {exc}") from None


def _check_signer(bundle: Bundle, trust_file: Path | None) -> str:
    """Which trusted key signed the bundle: the one given, else one of the box's. Refused for an
    unsigned bundle or an unknown key (`verify` said "OK" of any well-formed bundle once: it
    proves only what a trusted key proves). This runs the bundle's own code, so it can catch an
    accident, never a forgery: a forger replaces this check too."""
    keys = {trust_file.name: _given_key(trust_file)} if trust_file is not None else trusted_keys(TRUSTED_KEYS)
    if not keys:
        raise Refused(f"no key to check the signer against: give --trust PUB.pem (no trusted keys in {TRUSTED_KEYS})")
    return bundle.check_signed_by(keys)


def _install(bundle: Bundle, trust_file: Path | None) -> int:
    if os.geteuid() != 0:
        raise Refused("run it as root (it makes a system user, /etc/vmgateway, /opt/vmgateway and the units)")
    bundle.check_fits_this_box()
    version = bundle.manifest.version
    keys = trusted_keys(TRUSTED_KEYS)  # the box's configuration is not read: a new box has none
    new_key = None
    if keys:
        name = bundle.check_signed_by(keys)
        print(f"signed by {signature.fingerprint(bundle.signer or b'')}, trusted here as {name}")
    elif trust_file is not None:
        given = _given_key(trust_file)
        bundle.check_signed_by({trust_file.name: given})
        new_key = given
    else:
        bundle.check_signed_by({"the bundle's own signer": bundle.signer or b""})
        new_key = bundle.signer
        print(f"WARNING: no trusted key on this box and no --trust given: trusting the key that signed this"
              f" bundle, {signature.fingerprint(new_key or b'')}. Check that this is Vetmanager's release key;"
              f" from now on only bundles it signs are installed.", file=sys.stderr)
    layout = Layout(RELEASES_ROOT)
    running = layout.current_version()
    if running not in (None, version):
        raise Refused(f"release {running} is installed already: upgrade with vmgateway upgrade {bundle.path}")
    if running is None:
        _check_room(bundle, layout)
        _check_venv()
    if new_key is not None:
        print(f"trusting {signature.fingerprint(new_key)}: {trust(TRUSTED_KEYS, new_key)}")
    if running is None:
        _install_release(bundle, layout)
    else:
        print(f"release {version} is installed already")
    host = subprocess.run([str(layout.program(version)), "host", "install"], timeout=600)
    return host.returncode


def _install_release(bundle: Bundle, layout: Layout) -> None:
    version = bundle.manifest.version
    print(f"installing release {version} into {layout.release(version)} (offline, every wheel checked by hash)")
    install_bundle(layout, bundle)
    layout.switch_to(version)
    state = UpgradeState.load(layout.state_file)
    state.committed, state.committed_at = version, time.time()
    state.save(layout.state_file)


def _check_room(bundle: Bundle, layout: Layout) -> None:
    needed = bundle.path.stat().st_size * ROOM_FACTOR / 2**20
    if (free := free_mb(layout.root)) < needed:
        raise Refused(f"{free:,.0f} MB free under {layout.root}, {needed:,.0f} MB needed: make room first")


def _check_venv() -> None:
    """Debian's python3 makes a venv with pip only with python3-venv installed: find out before
    anything is changed, not half-way."""
    with tempfile.TemporaryDirectory(prefix="vmgateway-venv-check-") as scratch:
        try:
            made = subprocess.run([sys.executable, "-m", "venv", scratch], capture_output=True, text=True,
                                  timeout=VENV_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Refused(f"{sys.executable} cannot make a venv: {exc}") from None
        if made.returncode:
            raise Refused(f"{sys.executable} cannot make a venv with pip (apt-get install python3-venv):"
                          f" {(made.stderr or made.stdout).strip().splitlines()[-1:]}")
