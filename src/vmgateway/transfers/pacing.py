"""Uploads on a clinic's slow uplink: a rate limit for DICOM, and a window for large items.

A clinic's uplink may be a few Mbit/s that the reception's computers share. A 500 MB ultrasound
loop pushed at full speed fills it (and the router's queue) for minutes; a lab result posted
meanwhile waits behind it, and so does everyone's web. So DICOM uploads are paced below the link
(`transfers.max_upload_kbit_s`), which leaves room for HL7 and ASTM results — never paced: they are
a few kilobytes, and a vet waits for them. Items over `transfers.large_item_mb` may further be
kept for a window (`transfers.large_items_window`, e.g. "18:00-07:00", local time), while small
ones go at once. Measured on a shaped link in bench/README.md.

The rules here are pure (a clock is passed in), tested with hypothesis; the sinks apply them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

SLICE = 1 << 16
"""Paced bodies go out in slices this large: a 256 KiB read is not one burst on a slow line."""
BURST_S = 0.25
"""How far ahead of the rate an upload may run (a quarter of a second's worth of bytes)."""


@dataclass
class Pace:
    """A token bucket in bytes: `delay(n, now)` is how long to wait before sending `n` bytes so
    that, from any moment on, no more than `rate × time + burst` bytes go out."""

    kbit_s: int
    last: float = field(default=0.0)
    tokens: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.rate = self.kbit_s * 1000 / 8
        self.burst = self.rate * BURST_S

    def delay(self, n: int, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return max(0.0, -self.tokens / self.rate)


async def paced(chunks: AsyncIterator[bytes], pace: Pace | None,
                clock: Callable[[], float] | None = None) -> AsyncIterator[bytes]:
    """`chunks` as they come (no pace), or in slices no faster than the pace allows."""
    if pace is None:
        async for chunk in chunks:
            yield chunk
        return
    now = clock or asyncio.get_running_loop().time
    async for chunk in chunks:
        for start in range(0, len(chunk), SLICE):
            piece = chunk[start:start + SLICE]
            wait = pace.delay(len(piece), now())
            if wait:
                await asyncio.sleep(wait)
            yield piece
