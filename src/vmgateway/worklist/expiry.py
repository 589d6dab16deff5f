"""Entries leave the journal worklist.keep_days after their scheduled time (they leave the
worklist itself at that moment already: queries skip expired entries). Run hourly by the service."""

from __future__ import annotations

import logging

from vmgateway.store import Store

log = logging.getLogger(__name__)

EVERY_S = 3600.0


async def forget_expired_entries(store: Store) -> None:
    gone = await store.worklist.forget_expired()
    if gone:
        log.info("expired worklist entries removed", extra={"entries": gone})
