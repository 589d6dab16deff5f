"""Where an upgrade keeps things under upgrade.root, and the one atomic switch of `current`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vmgateway.files import fsync_directory

INSTALLING = ".installing"
UNSIGNED = "UNSIGNED"
"""In a release's folder when it was installed from a wheel with --allow-unsigned: what it says
is recorded in the journal's audit trail at every start of that release."""
VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / "upgrade.lock"

    def release(self, version: str) -> Path:
        if not VERSION.match(version):
            raise ValueError(f"{version!r} is not a release version")
        return self.releases / version

    def program(self, version: str) -> Path:
        return self.release(version) / "venv" / "bin" / "vmgateway"

    def half_installed(self) -> list[Path]:
        """Releases whose installation was cut off (the marker goes last, when all is in place).
        A venv cannot be moved once made (its scripts name their interpreter's path), so a
        release is built where it stays, and the marker says whether it is whole."""
        return sorted(path.parent for path in self.releases.glob(f"*/{INSTALLING}")) if self.releases.exists() else []

    def unsigned_note(self, version: str) -> str | None:
        """Why release `version` runs unsigned, when it was installed with --allow-unsigned."""
        try:
            return (self.release(version) / UNSIGNED).read_text().strip()
        except (FileNotFoundError, ValueError):
            return None

    def current_version(self) -> str | None:
        """The release `current` points at, or None before the first one."""
        try:
            return Path(os.readlink(self.current)).name
        except FileNotFoundError:
            return None

    def switch_to(self, version: str) -> None:
        """Point `current` at a release: a new link under another name, renamed over the old one.
        A crash at any instant leaves `current` pointing at one release or the other, never at none."""
        target = self.release(version)
        if not (target / "venv" / "bin" / "vmgateway").exists():
            raise FileNotFoundError(f"release {version} is not installed in {target}")
        temporary = self.root / f".current-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        os.symlink(Path("releases") / version, temporary)
        os.replace(temporary, self.current)
        fsync_directory(self.root)
