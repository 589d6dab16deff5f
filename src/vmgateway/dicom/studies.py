"""Background steps of the DICOM side: stable-study detection, abandoned partial files.

DICOM has no "study finished" message; modalities simply stop sending. Waiting for a quiet
period (`stable_after_s`) is what PACS do too. A late instance reopens the study (see
store.recording). The service runs these steps periodically (vmgateway.jobs).
"""

from __future__ import annotations

import logging

from vmgateway.store import Store

log = logging.getLogger(__name__)


def completion_interval(stable_after_s: float) -> float:
    """How often to look for quiet studies: often enough that a study is complete at most a
    quarter of its quiet period late, and at least every 5 s."""
    return min(5.0, stable_after_s / 4)


async def complete_quiet_studies(store: Store, stable_after_s: float) -> None:
    """Mark studies complete that have been quiet for `stable_after_s`."""
    for study_uid in await store.complete_quiet_studies(stable_after_s):
        log.info("study complete", extra={"study_instance_uid": study_uid})


async def remove_abandoned_transfers(store: Store, network_timeout_s: float) -> None:
    """Delete partial files of associations that died mid-dataset.

    pynetdicom leaves the file it was streaming into when an association is aborted; anything
    not written to for twice the network timeout belongs to such an association.
    """
    removed = await store.remove_partial_files(2 * network_timeout_s)
    if removed:
        log.info("removed partial files of aborted transfers", extra={"count": removed})
