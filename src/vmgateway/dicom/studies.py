"""Background work of the DICOM side: stable-study detection, abandoned partial files.

DICOM has no "study finished" message; modalities simply stop sending. Waiting for a quiet
period (`stable_after_s`) is what PACS do too. A late instance reopens the study (see
store.records).
"""

from __future__ import annotations

import asyncio
import logging

from vmgateway.store import Store

log = logging.getLogger(__name__)


async def complete_quiet_studies(store: Store, stable_after_s: float) -> None:
    """Mark quiet studies complete, every few seconds, until cancelled."""
    interval = min(5.0, stable_after_s / 4)
    while True:
        await asyncio.sleep(interval)
        for study_uid in await asyncio.to_thread(store.complete_quiet_studies, stable_after_s):
            log.info("study complete", extra={"study_instance_uid": study_uid})


async def remove_abandoned_transfers(store: Store, network_timeout_s: float) -> None:
    """Delete partial files of associations that died mid-dataset, until cancelled.

    pynetdicom leaves the file it was streaming into when an association is aborted; anything
    not written to for twice the network timeout belongs to such an association.
    """
    while True:
        await asyncio.sleep(network_timeout_s)
        await asyncio.to_thread(store.spool.remove_partial_files, 2 * network_timeout_s)
