"""Entries leave the journal worklist.keep_days after their scheduled time (they leave the
worklist itself at that moment already: queries skip expired entries)."""

from __future__ import annotations

import asyncio
import logging
import time

from vmgateway.store import JournalError, Store
from vmgateway.store.worklist import forget_expired

log = logging.getLogger(__name__)

EVERY_S = 3600


async def forget_expired_entries(store: Store) -> None:
    """Until cancelled, once an hour."""
    while True:
        try:
            gone = await asyncio.to_thread(store.journal.write, forget_expired(time.time()))
        except (JournalError, TimeoutError) as exc:
            log.warning("expired worklist entries not removed", extra={"error": str(exc)})
        else:
            if gone:
                log.info("expired worklist entries removed", extra={"entries": gone})
        await asyncio.sleep(EVERY_S)
