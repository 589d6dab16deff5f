"""The upgrade state: which release is committed, which was before, which is on trial, which failed.

Kept in a JSON file written atomically, so that a reboot in the middle of a trial finds it
and the next `vmgateway upgrade` (or `upgrade --recover` at boot) rolls the trial back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmgateway.files import write_atomically


@dataclass
class UpgradeState:
    committed: str | None = None
    """The last release that passed its health check: what a rollback returns to."""
    previous: str | None = None
    trial: str | None = None
    """A release switched to but not yet healthy; set before the switch, cleared after."""
    snapshot: str | None = None
    """The journal snapshot taken for the trial (file name under snapshots/)."""
    trial_started_at: float | None = None
    failed: list[str] = field(default_factory=list)
    """Releases that failed their trial, newest last: never rolled back to."""
    committed_at: float | None = None
    """When the committed release was committed (the box's last upgrade)."""
    rolled_back_at: float | None = None
    """When a trial was last rolled back (a fleet alerts on it)."""

    @classmethod
    def load(cls, path: Path) -> UpgradeState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self), indent=2) + "\n")
