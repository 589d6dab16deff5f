"""One reading of the UPS, outside the running gateway: for `doctor` and `upgrade`."""

from __future__ import annotations

import asyncio

from vmgateway.config import PowerConfig
from vmgateway.power.nut import NutClient, NutServer
from vmgateway.power.state import PowerReading, read_state


def read_ups(power: PowerConfig, timeout: float) -> PowerReading:
    """The UPS as upsd reports it now; raises NutError when it cannot be asked."""

    async def read() -> dict[str, str]:
        client = NutClient(NutServer(power.nut_host, power.nut_port, power.ups, power.user, power.password()),
                           timeout)
        try:
            return await client.variables()
        finally:
            await client.close()

    return read_state(asyncio.run(read()))
