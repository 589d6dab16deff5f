"""Watches the UPS through upsd and tells the service when to drain.

Every change of state is recorded (journal event, log); the service reads `reading` for the
status API and metrics. A drain is asked for once, on FSD or low battery at once, or when
the runtime stays under `power.min_runtime_s` for two polls in a row (runtime estimates jump
with the load for a moment; mains coming back in between cancels it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vmgateway.config import PowerConfig
from vmgateway.power.nut import NutClient, NutError, NutServer
from vmgateway.power.state import PowerReading, PowerState, drain_reason, read_state, unknown
from vmgateway.store import Store

log = logging.getLogger(__name__)


class PowerMonitor:
    def __init__(self, config: PowerConfig, store: Store, drain: Callable[[str], None]) -> None:
        self.config = config
        self.store = store
        self._drain = drain
        self.reading = unknown("upsd not read yet")
        server = NutServer(config.nut_host, config.nut_port, config.ups, config.user, config.password())
        self._client = NutClient(server, timeout=config.poll_interval_s)

    async def run(self) -> None:
        """Poll until a drain is asked for (then return) or until cancelled."""
        suspected: str | None = None
        try:
            while True:
                reading = await self._read()
                reason = drain_reason(reading, self.config.min_runtime_s)
                if reason and (reading.state is not PowerState.ON_BATTERY or suspected):
                    # The drain first: a journal that cannot take the event must not keep the box
                    # from stopping cleanly.
                    log.warning("power failing: draining", extra={"reason": reason})
                    self._drain(reason)
                    await self._note(reading)
                    await self.store.record_event("power_drain", reason)
                    return
                await self._note(reading)
                if suspected and not reason:
                    log.info("power drain cancelled", extra={"power": reading.describe()})
                suspected = reason
                await asyncio.sleep(self.config.poll_interval_s)
        finally:
            await self._client.close()

    async def _read(self) -> PowerReading:
        try:
            return read_state(await self._client.variables())
        except NutError as exc:
            return unknown(str(exc))

    async def _note(self, reading: PowerReading) -> None:
        previous, self.reading = self.reading, reading
        if (reading.state, reading.error) == (previous.state, previous.error):
            return
        await self.store.record_event("power", reading.describe())
        level = logging.INFO if reading.state is PowerState.ONLINE else logging.WARNING
        log.log(level, "power state changed", extra={"power": reading.describe(), "was": previous.state.value})
