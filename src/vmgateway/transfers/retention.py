"""Delivered files leave the spool after storage.keep_delivered_days, or sooner when the disk
runs low (the store does the careful part; the service runs this every minute)."""

from __future__ import annotations

import logging
import time

from vmgateway.config import StorageConfig
from vmgateway.store import Store

log = logging.getLogger(__name__)

INTERVAL_S = 60.0


async def remove_delivered_files(store: Store, config: StorageConfig) -> None:
    delivered_before = time.time() - config.keep_delivered_days * 86400
    removed = await store.remove_delivered_files(delivered_before, config.soft_min_free_mb * 2**20)
    if removed:
        log.info("removed delivered files", extra={"count": removed, "free_mb": store.free_bytes() // 2**20})
