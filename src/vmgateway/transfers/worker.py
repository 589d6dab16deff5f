"""One destination's delivery loop: due items out, outcomes into the journal.

Each destination (DICOMweb, HL7) runs on its own, so one that is down never holds the other
up. Within one, an outage pauses the destination (exponential backoff with jitter, or the
server's Retry-After) and counts against no item; a refusal counts against that item alone,
which then waits its own backoff while the rest go on. A batch refused as a whole without
saying which instance is to blame is sent again one instance at a time.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from vmgateway.backoff import backoff
from vmgateway.config import TransfersConfig
from vmgateway.counters import DELIVERIES, UPSTREAM_FAILURES
from vmgateway.model import ItemKind
from vmgateway.records import Due
from vmgateway.store import Store
from vmgateway.transfers.outcome import Outcome
from vmgateway.when import Window

log = logging.getLogger(__name__)

IDLE_S = 1.0
"""How often an idle or switched-off destination looks for work."""
RETRY_AFTER_CAP_S = 3600.0
"""A Retry-After longer than this (or than backoff_max_s, if longer) is not waited out in full."""


class Sink(Protocol):
    name: str
    kind: ItemKind
    max_items: int
    max_bytes: int
    http: httpx.AsyncClient

    async def send(self, batch: list[Due]) -> Outcome: ...

    def retarget(self, url: str) -> None: ...


def _backoff(config: TransfersConfig, failures: int) -> float:
    return backoff(failures, config.backoff_initial_s, config.backoff_max_s, jitter=True)


@dataclass
class DestinationState:
    """What status shows of a destination."""

    url: str
    last_delivered_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    paused_until: float | None = None
    failures: int = 0
    in_flight: int = 0
    large_items_held_until: float | None = None
    """When large items may go again (transfers.large_items_window); None while they may."""
    alone: set[int] = field(default_factory=set)
    """Items to send one at a time (their batch was refused as a whole)."""

    def as_dict(self) -> dict[str, Any]:
        paused = self.paused_until is not None and self.paused_until > time.time()
        return {"url": self.url, "state": "paused" if paused else "ok", "last_delivered_at": self.last_delivered_at,
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "paused_until": self.paused_until if paused else None, "in_flight": self.in_flight,
                "large_items_held_until": self.large_items_held_until}


class Destination:
    def __init__(self, sink: Sink, url: str, store: Store, config: TransfersConfig) -> None:
        self.sink = sink
        self.store = store
        self.config = config
        self.state = DestinationState(url)
        self._busy: set[int] = set()
        self._work = asyncio.Event()
        """Set when the store says there may be new work (an item kept, transfers switched on)."""
        self._listening = False
        self._stopping = False

    def stop_starting(self) -> None:
        """A drain: start no new request; `run` returns once those under way have finished."""
        self._stopping = True
        self._work.set()

    async def run(self) -> None:
        """Deliver until cancelled, or until a drain's requests have finished; requests still
        running are cancelled with it (their items stay due). Run again after a failure (the
        service's job supervisor does), it carries on where it was."""
        tasks: set[asyncio.Task[None]] = set()
        if not self._listening:
            loop = asyncio.get_running_loop()
            self.store.listen(lambda: self._wake(loop), self.sink.kind, "transfers")
            self._listening = True
        try:
            while True:
                self._work.clear()
                while len(tasks) < self.config.concurrency and not self._paused() and not self._stopping:
                    batch = await self._next_batch()
                    if not batch:
                        break
                    self._busy.update(due.item_id for due in batch)
                    tasks.add(asyncio.create_task(self._deliver(batch)))
                self.state.in_flight = len(tasks)
                if self._stopping and not tasks:
                    return
                # Wait for a request to finish, for new work (when there is room for it), or
                # for the pause to end; look again every IDLE_S in any case.
                waits: set[asyncio.Future[Any]] = set(tasks)
                woken = None
                if len(tasks) < self.config.concurrency and not self._paused() and not self._stopping:
                    woken = asyncio.ensure_future(self._work.wait())
                    waits.add(woken)
                timeout = min(IDLE_S, self._pause_left()) if self._paused() else IDLE_S
                if waits:
                    done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                    tasks.difference_update(done)
                else:
                    await asyncio.sleep(timeout)
                if woken is not None:
                    woken.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def retarget(self, url: str) -> None:
        """Send to `url` from the next request on (a remote change); requests under way finish where they went."""
        self.sink.retarget(url)
        self.state.url = url

    async def close(self) -> None:
        """Once the destination's job is stopped: its HTTP connections are closed."""
        await self.sink.http.aclose()

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """From any thread: there may be new work."""
        loop.call_soon_threadsafe(self._work.set)

    def _paused(self) -> bool:
        return self._pause_left() > 0

    def _pause_left(self) -> float:
        return max(0.0, (self.state.paused_until or 0) - time.time())

    def _largest_now(self) -> int | None:
        """The largest item that may go now: any, unless large items wait for their window (then
        status says until when)."""
        window = self.config.large_items_window
        if not window:
            return None
        now = datetime.datetime.now()
        opens = Window.parse(window).opens_next(now)
        self.state.large_items_held_until = None if opens == now else opens.timestamp()
        return None if opens == now else int(self.config.large_item_mb * 2**20)

    async def _next_batch(self) -> list[Due]:
        batch = await self.store.deliveries.next_batch(self.sink.kind, set(self._busy), self.sink.max_items,
                                                       self.sink.max_bytes, self._largest_now())
        if batch and batch[0].item_id in self.state.alone:
            return batch[:1]
        for index, due in enumerate(batch):
            if due.item_id in self.state.alone:
                return batch[:index]
        return batch

    async def _deliver(self, batch: list[Due]) -> None:
        began = time.monotonic()
        try:
            outcome = await self.sink.send(batch)
            await self._record(batch, outcome)
        except Exception as exc:  # a bug must not kill the loop, and must be seen
            log.exception("delivery failed unexpectedly", extra={"destination": self.sink.name})
            self._note_failure(f"{exc.__class__.__name__}: {exc}", None)
        else:
            if outcome.delivered:
                log.info("delivered", extra={"destination": self.sink.name, "items": len(outcome.delivered),
                                             "bytes": sum(d.size for d in batch if d.item_id in outcome.delivered),
                                             "ms": round((time.monotonic() - began) * 1000)})
        finally:
            self._busy.difference_update(due.item_id for due in batch)

    async def _record(self, batch: list[Due], outcome: Outcome) -> None:
        """On the event loop, like everything that changes the destination's state."""
        now = time.time()
        name = self.sink.name
        if outcome.unreachable is None:
            self.state.failures = 0  # it answered: the next outage starts its backoff afresh
        if outcome.delivered:
            await self.store.deliveries.mark_delivered(outcome.delivered)
            self.state.last_delivered_at = now
            self.state.alone.difference_update(outcome.delivered)
            DELIVERIES.labels(name, "delivered").inc(len(outcome.delivered))
        refused = dict(outcome.refused)
        dead: list[int] = []
        if refused:
            retry_at = {d.item_id: now + _backoff(self.config, d.attempts + 1) for d in batch if d.item_id in refused}
            dead += await self.store.deliveries.record_refused(outcome.refused, self.config.max_attempts, retry_at)
            DELIVERIES.labels(name, "refused").inc(len(outcome.refused))
            log.warning("refused upstream", extra={"destination": name, "items": refused})
        if outcome.split:
            self.state.alone.update(due.item_id for due in batch)
        if outcome.unreachable is not None:
            waiting = [d.item_id for d in batch if d.item_id not in outcome.delivered and d.item_id not in refused]
            dead_before = now - self.config.max_age_h * 3600
            dead += await self.store.deliveries.record_unreachable(waiting, outcome.unreachable, dead_before)
            if not outcome.split:
                self._note_failure(outcome.unreachable, outcome.retry_after_s)
        if dead:
            DELIVERIES.labels(name, "dead").inc(len(dead))
            detail = f"{name}: {len(dead)} item(s) dead, last error: {outcome.unreachable or outcome.refused[-1][1]}"
            await self.store.record_event("dead", f"{detail}; items {dead[:20]}")
            log.error("items dead: kept, retry through the API", extra={"destination": name, "items": dead})

    def _note_failure(self, error: str, retry_after_s: float | None) -> None:
        self.state.failures += 1
        wait = _backoff(self.config, self.state.failures)
        if retry_after_s is not None:  # the server knows best, within reason (an hour, or backoff_max_s)
            wait = min(max(retry_after_s, 0.0), max(self.config.backoff_max_s, RETRY_AFTER_CAP_S))
        self.state.paused_until = time.time() + wait
        self.state.last_error, self.state.last_error_at = error, time.time()
        UPSTREAM_FAILURES.labels(self.sink.name).inc()
        log.warning("upstream unavailable", extra={"destination": self.sink.name, "error": error,
                                                   "retry_in_s": round(wait, 1)})
