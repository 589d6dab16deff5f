"""Stable-study detection: a study is complete once it has been quiet for `stable_after_s`.

DICOM has no "study finished" message; modalities simply stop sending. Waiting for a quiet
period is what PACS do too. A late instance reopens the study (see store.records).
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
