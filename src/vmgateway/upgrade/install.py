"""Installing a release wheel into releases/<version>/venv, beside the running release."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vmgateway.bundle.manifest import Bundle
from vmgateway.files import fsync_directory, fsync_tree
from vmgateway.upgrade.layout import INSTALLING, VERSION, Layout

PIP_TIMEOUT_S = 1800


class InstallError(Exception):
    """The wheel cannot be installed; nothing that runs was touched."""


def wheel_version(wheel: Path) -> str:
    """The release a vmgateway wheel holds (its file name, PEP 427), checked against its content."""
    parts = wheel.name.split("-")
    if wheel.suffix != ".whl" or len(parts) < 5 or parts[0] != "vmgateway" or not VERSION.match(parts[1]):
        raise InstallError(f"{wheel.name} is not a vmgateway wheel (vmgateway-<version>-py3-none-any.whl)")
    try:
        with zipfile.ZipFile(wheel) as archive:
            if "vmgateway/__init__.py" not in archive.namelist():
                raise InstallError(f"{wheel.name} does not contain the vmgateway package")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InstallError(f"{wheel} cannot be read as a wheel: {exc}") from None
    return parts[1]


def install_release(layout: Layout, wheel: Path, wheelhouse: Path | None, requirements: Path | None = None) -> str:
    """Make releases/<version> with its own venv; return the version. From a bundle, pip takes
    the wheelhouse only and `requirements` pins every wheel by its hash. A cut-off install leaves
    its marker behind and is removed by the next attempt (Layout.half_installed)."""
    version = wheel_version(wheel)
    if layout.current_version() == version:
        raise InstallError(f"release {version} is the one running now")
    target = layout.release(version)
    if target.exists():
        shutil.rmtree(target)  # an earlier attempt of the same version: start clean
    target.mkdir(parents=True)
    (target / INSTALLING).write_text(str(wheel) + "\n")
    fsync_directory(target.parent)
    fsync_directory(layout.root)  # releases/ itself may be new
    venv = target / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "making the venv")
    sources = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    wanted = ["--require-hashes", "--no-cache-dir", "--requirement", str(requirements)] if requirements else [
        str(wheel)]
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *sources, *wanted], "installing the wheel and its dependencies")
    reported = _run([str(venv / "bin" / "vmgateway"), "--version"], "asking the new release its version").strip()
    if reported != f"vmgateway {version}":
        raise InstallError(f"the installed release says {reported!r}, not vmgateway {version}")
    fsync_tree(target)  # before the marker goes: a power cut soon after must not find a release of empty files
    (target / INSTALLING).unlink()
    fsync_directory(target)
    return version


def install_bundle(layout: Layout, bundle: Bundle) -> str:
    """install_release from a bundle, offline: its wheels unpacked beside the releases (each
    checked against the signed manifest as it is written), pinned by their hashes."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.root, prefix=".bundle-") as scratch:
        bundle.extract([*bundle.manifest.wheels, "requirements.txt"], Path(scratch))
        return install_release(layout, Path(scratch) / bundle.manifest.release_wheel(), Path(scratch) / "wheels",
                               Path(scratch) / "requirements.txt")


def _run(command: list[str], what: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise InstallError(f"{what} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout
