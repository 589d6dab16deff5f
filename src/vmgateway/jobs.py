"""The one helper that runs the gateway's background work, so none of it can die silently.

Two shapes of job: *periodic* ones (complete quiet studies, remove partial and delivered files,
forget expired worklist entries) run one step every interval; *long-running* ones (a push
destination, the PACS poller, the UPS watch, the watchdog pings) loop on their own. When a
step fails, the failure is logged, the job shows `failing` with the error (status, page and
metrics read `states()`), and the step is tried again after a backoff (1 s, doubling, up to
the job's interval or a minute, whichever is longer); the first success clears it. A
long-running job that raises is restarted after the same backoff and its restarts counted.
A journal error once stopped the UPS watch for good without a word: this is what prevents it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from vmgateway.backoff import backoff

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
MIN_BACKOFF_CAP_S = 60.0
STOP_WAIT_S = 5.0
"""How long `stop()` waits for cancelled jobs. One that ignores its cancellation is a bug, and it
must not keep the receivers open past a power cut: a UPS watch once looped on after SIGTERM
(Python 3.11's wait_for swallowed the cancel) and the gateway never stopped."""


@dataclass
class JobState:
    state: str = "starting"
    """starting, ok (last step or run went well), failing (backing off), finished, stopped."""
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    failures_in_a_row: int = 0
    failures: int = 0
    restarts: int = 0


class Jobs:
    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def every(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]], *,
              first_after_s: float | None = None) -> None:
        """Run `step` every `interval_s` (the first time after `first_after_s`, default one interval)."""
        self._start(name, self._periodic(name, interval_s, step,
                                         interval_s if first_after_s is None else first_after_s))

    def run(self, name: str, job: Callable[[], Awaitable[None]], *, max_backoff_s: float = MIN_BACKOFF_CAP_S) -> None:
        """Run `job` until it returns (finished) or is cancelled; restart it whenever it raises."""
        self._start(name, self._supervised(name, job, max_backoff_s))

    def states(self) -> dict[str, dict[str, Any]]:
        """Each job by name, as status, the page and metrics show it."""
        return {name: asdict(state) for name, state in self._states.items()}

    async def finish(self, names: list[str], timeout_s: float) -> None:
        """Wait up to `timeout_s` for the named long-running jobs to return by themselves (a drain
        told them to start nothing new and finish what runs); `stop()` cancels what is left."""
        waiting = [self._tasks[name] for name in names if name in self._tasks]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Cancel every job and wait up to `wait_s` for them (a drain has stopped what feeds them);
        a job still running then is logged and left behind, so that the stop goes on."""
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=wait_s)
        for name, task in self._tasks.items():
            if task.done():
                self._states[name].state = "stopped"
            else:
                log.error("background job ignored its cancellation, left running", extra={"job": name})
        self._tasks.clear()

    def _start(self, name: str, body: Awaitable[None]) -> None:
        if name in self._states:
            raise ValueError(f"a job named {name!r} runs already")
        self._states[name] = JobState()
        self._tasks[name] = asyncio.create_task(body, name=f"job:{name}")  # type: ignore[arg-type]

    async def _periodic(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]],
                        first_after_s: float) -> None:
        state = self._states[name]
        await asyncio.sleep(first_after_s)
        while True:
            try:
                await step()
            except Exception as exc:  # the point of this module: noted, shown, retried
                wait = self._failed(name, state, exc, max(interval_s, MIN_BACKOFF_CAP_S))
            else:
                self._succeeded(state)
                wait = interval_s
            await asyncio.sleep(wait)

    async def _supervised(self, name: str, job: Callable[[], Awaitable[None]], max_backoff_s: float) -> None:
        state = self._states[name]
        while True:
            state.state = "ok"
            began = time.monotonic()
            try:
                await job()
            except Exception as exc:  # the job died: noted, shown, restarted
                if time.monotonic() - began > max_backoff_s:
                    state.failures_in_a_row = 0  # it ran well for a while: a new failure starts afresh
                wait = self._failed(name, state, exc, max_backoff_s)
                await asyncio.sleep(wait)
                state.restarts += 1
                log.warning("background job restarted", extra={"job": name, "restarts": state.restarts})
            else:
                state.state = "finished"
                return

    @staticmethod
    def _failed(name: str, state: JobState, exc: Exception, max_backoff_s: float) -> float:
        state.failures += 1
        state.failures_in_a_row += 1
        state.state = "failing"
        state.last_error, state.last_error_at = f"{exc.__class__.__name__}: {exc}", time.time()
        wait = backoff(state.failures_in_a_row, FIRST_RETRY_S, max_backoff_s)
        log.error("background job failed", exc_info=exc,
                  extra={"job": name, "error": state.last_error, "retry_in_s": wait,
                         "failures_in_a_row": state.failures_in_a_row})
        return wait

    @staticmethod
    def _succeeded(state: JobState) -> None:
        state.state = "ok"
        state.failures_in_a_row = 0
        state.last_success_at = time.time()
