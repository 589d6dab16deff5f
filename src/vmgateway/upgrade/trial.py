"""While a release is on trial, it listens on loopback only.

Only the upgrade's health check can then reach it: no modality, instrument or Vetmanager can
hand it anything it would acknowledge. That is what makes a rollback safe even when it must
put back the journal as it was before the trial — nothing acknowledged to anyone else can be
in the journal that is thrown away. Senders that try meanwhile find the port closed and keep
their data. The upgrade writes the marker before the switch and removes it on commit.
"""

from __future__ import annotations

from pathlib import Path

from vmgateway.config import Settings

TRIAL_MARKER = "on-trial"
LOOPBACK = "127.0.0.1"


def marker(settings: Settings) -> Path:
    return settings.storage.data_dir / TRIAL_MARKER


def as_run(settings: Settings) -> tuple[Settings, bool]:
    """The settings the gateway runs with, and whether it is on trial (then loopback only)."""
    if not marker(settings).exists():
        return settings, False
    update = {name: getattr(settings, name).model_copy(update={"bind": LOOPBACK}) for name in ("dicom", "hl7", "api")}
    return settings.model_copy(update=update), True
