"""Reasons not to start an upgrade now: too little space, the UPS, transfers under way."""

from __future__ import annotations

from pathlib import Path

from vmgateway.config import Settings
from vmgateway.files import free_mb
from vmgateway.power.nut import NutError
from vmgateway.power.reading import read_ups
from vmgateway.power.state import PowerState
from vmgateway.store.report import waiting_items

UPS_TIMEOUT_S = 5


def refusals(settings: Settings, wheel: Path, force: bool) -> list[str]:
    """Why the upgrade must not start; `force` lets it start with transfers waiting or the UPS unknown."""
    found = []
    config = settings.upgrade
    if not settings.storage.data_dir.is_absolute():
        found.append(f"storage.data_dir = {str(settings.storage.data_dir)!r} is relative: the service and an"
                     " upgrade run from different folders; give it as an absolute path, e.g. /var/lib/vmgateway")
    journal = settings.journal_path
    journal_mb = journal.stat().st_size / 2**20 if journal.exists() else 0
    needed = config.min_free_mb + wheel.stat().st_size / 2**20 + journal_mb * 1.1  # the release, the snapshot
    if (free := free_mb(config.root)) < needed:
        found.append(f"{free:,.0f} MB free under {config.root}, {needed:,.0f} MB needed (upgrade.min_free_mb,"
                     " the wheel and a snapshot of the journal): make room first")
    if settings.power.enabled:
        try:
            reading = read_ups(settings.power, UPS_TIMEOUT_S)
        except NutError as exc:
            if not force:
                found.append(f"the UPS cannot be read ({exc}): check NUT, or --force")
        else:
            if reading.state is not PowerState.ONLINE:
                found.append(f"the UPS is not on mains: {reading.describe()} (an upgrade waits for mains power)")
    if settings.transfers.mode == "push" and journal.exists() and not force:
        waiting = waiting_items(journal)
        if waiting:
            found.append(f"{waiting} item(s) are waiting to be pushed to Vetmanager: upgrade when they are"
                         " delivered, or --force (they are kept and sent after the restart)")
    return found
