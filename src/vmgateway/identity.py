"""Who a box is, for a fleet of hundreds: a stable gateway id, its host and site, what runs and
what ran before — the same in /api/v1/status, the metrics and `vmgateway status --json`.

The gateway id is made once (a UUID, at the first start) and kept in the journal, which upgrades
migrate and rollbacks restore from a snapshot of the same journal: it outlives both. Push
destinations already send it (`X-Vmgateway-Gateway-Id`, part of each Idempotency-Key), so it
cannot change under a running box.
"""

from __future__ import annotations

import socket
from typing import Any

from vmgateway import __version__
from vmgateway.config import Settings
from vmgateway.upgrade.layout import Layout
from vmgateway.upgrade.state import UpgradeState


def releases(settings: Settings) -> dict[str, Any]:
    """The upgrade state as a fleet reads it (empty on a machine that was never upgraded)."""
    state = UpgradeState.load(Layout(settings.upgrade.root).state_file)
    return {"committed": state.committed, "previous": state.previous, "on_trial": state.trial,
            "failed": list(state.failed), "last_upgrade_at": state.committed_at,
            "last_rollback_at": state.rolled_back_at}


def identity(settings: Settings, gateway_id: str | None, started_at: float | None) -> dict[str, Any]:
    """The box in one object; `started_at` is when the running gateway started (None: not running)."""
    return {"gateway_id": gateway_id, "hostname": socket.gethostname(), "site": settings.site.name,
            "version": __version__, "started_at": started_at, "releases": releases(settings)}
