"""The bookkeeping every stream receiver (HL7, ASTM) needs for its connections: the allowlist
rule its Admission applies (vmgateway.admission), and each connection counted while it runs, so
that a drain can wait for it and then cut what is left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address


def peer_allowed(address: str, allowed: Sequence[IPv4Network | IPv6Network]) -> bool:
    """Whether a peer may connect: anyone when `allowed` is empty, else only from those networks."""
    if not allowed:
        return True
    peer = ip_address(address)
    return any(peer in network for network in allowed)


class Connections:
    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    async def serve(self, writer: asyncio.StreamWriter, conversation: Awaitable[None]) -> None:
        """Run one connection's conversation to its end (a peer that hangs up is an end too),
        then close it."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await conversation
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._running.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def drain(self, timeout: float, *others: asyncio.Task[None]) -> None:
        """Give running conversations (and `others`) `timeout` to finish, then cancel the rest."""
        running = self._running | set(others)
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
