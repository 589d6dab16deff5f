"""Background work cannot die silently: a failing job is shown (status, metrics) and carries on.

First the supervisor alone (vmgateway.jobs); then the real gateway, in this process, with a
journal failure injected into each of its jobs until the test has seen it in /api/v1/status,
and the job seen to recover once the journal works again.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import free_ports
from vmgateway.config import Settings
from vmgateway.jobs import Jobs
from vmgateway.service import Gateway
from vmgateway.store import JournalError, Store

WAIT_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until `check` holds, looking every 50 ms; fails after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.05)


def test_a_failing_periodic_step_is_shown_retried_and_cleared() -> None:
    async def scenario() -> None:
        jobs = Jobs()
        failed, succeeded = asyncio.Event(), asyncio.Event()
        calls = 0

        async def step() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                failed.set()
                raise JournalError("journal commit failed: disk I/O error")
            succeeded.set()

        jobs.every("example", 0.05, step, first_after_s=0)
        await asyncio.wait_for(failed.wait(), WAIT_S)
        shown = jobs.states()["example"]
        assert shown["state"] == "failing" and shown["failures_in_a_row"] == 1
        assert shown["last_error"] == "JournalError: journal commit failed: disk I/O error"
        await asyncio.wait_for(succeeded.wait(), WAIT_S)  # retried after 1 s, not given up
        shown = jobs.states()["example"]
        assert shown["state"] == "ok" and shown["failures_in_a_row"] == 0 and shown["failures"] == 1
        assert shown["last_error"] is not None  # the last problem stays visible after it cleared
        await jobs.stop()
        assert jobs.states()["example"]["state"] == "stopped"

    asyncio.run(scenario())


def test_a_long_running_job_that_dies_is_restarted_and_counted() -> None:
    async def scenario() -> None:
        jobs = Jobs()
        second_run = asyncio.Event()
        runs = 0

        async def job() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise RuntimeError("a bug")
            second_run.set()
            await asyncio.Event().wait()  # runs until cancelled

        jobs.run("example", job)
        await asyncio.wait_for(second_run.wait(), WAIT_S)
        shown = jobs.states()["example"]
        assert (shown["state"], shown["restarts"], shown["last_error"]) == ("ok", 1, "RuntimeError: a bug")
        await jobs.stop()

    asyncio.run(scenario())


def test_a_job_that_ignores_its_cancellation_does_not_hold_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        jobs = Jobs()
        stubborn_started, let_go = asyncio.Event(), asyncio.Event()

        async def stubborn() -> None:  # what 3.11's wait_for once made of the UPS watch
            stubborn_started.set()
            give_up_at = time.monotonic() + 10  # bounded, so that a stop that waits for it ends too
            while not let_go.is_set() and time.monotonic() < give_up_at:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass

        async def polite() -> None:
            await asyncio.Event().wait()

        jobs.run("stubborn", stubborn)
        jobs.run("polite", polite)
        await asyncio.wait_for(stubborn_started.wait(), WAIT_S)
        await jobs.stop(wait_s=0.2)
        states = jobs.states()
        assert states["polite"]["state"] == "stopped"
        assert states["stubborn"]["state"] == "ok"  # still running, and not shown as stopped
        let_go.set()

    with caplog.at_level(logging.ERROR, logger="vmgateway.jobs"):
        asyncio.run(scenario())
    [record] = [r for r in caplog.records if r.getMessage() == "background job ignored its cancellation, left running"]
    assert record.job == "stubborn"  # type: ignore[attr-defined]


class Breakable:
    """Wraps a store method: while `broken`, every call fails as a journal failure would."""

    def __init__(self, method: Callable[..., Awaitable[Any]], only: Callable[..., bool] = lambda *a: True) -> None:
        self.method = method
        self.only = only
        self.broken = True
        self.failed = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken and self.only(*args):
            self.failed.set()
            raise JournalError("journal commit failed: disk I/O error (injected)")
        return await self.method(*args, **kwargs)


def test_every_job_of_the_gateway_survives_a_journal_failure(tmp_path: Path) -> None:
    dicom_port, hl7_port, api_port, closed_port, nut_port = free_ports(5)
    settings = Settings.model_validate({
        "storage": {"data_dir": str(tmp_path / "var")},
        "dicom": {"bind": "127.0.0.1", "port": dicom_port, "stable_after_s": 0.4, "network_timeout_s": 0.5},
        "hl7": {"bind": "127.0.0.1", "port": hl7_port},
        "api": {"bind": "127.0.0.1", "port": api_port, "tls": False},
        "power": {"enabled": True, "nut_port": nut_port, "poll_interval_s": 0.2},  # no upsd there: unknown
        "transfers": {"mode": "push", "dicomweb_url": f"http://127.0.0.1:{closed_port}/dicomweb",
                      "allow_plain_http": True},
    })
    tokens = Store(settings.storage.data_dir, 0)
    tokens.open_journal()
    token = tokens.tokens.create("test")
    tokens.close()

    async def scenario() -> None:
        gateway = Gateway(settings)  # in this process: its DICOM receiver sets tempfile.tempdir (restored below)
        store = gateway.store
        injected = {
            "study_completion": Breakable(store.complete_quiet_studies),
            "partial_files": Breakable(store.remove_partial_files),
            "retention": Breakable(store.remove_delivered_files),
            "worklist_expiry": Breakable(store.worklist.forget_expired),
            "push:dicomweb": Breakable(store.deliveries.next_batch),
            "ups_watch": Breakable(store.record_event, only=lambda kind, *_: kind == "power"),
        }
        store.complete_quiet_studies = injected["study_completion"]  # type: ignore[method-assign]
        store.remove_partial_files = injected["partial_files"]  # type: ignore[method-assign]
        store.remove_delivered_files = injected["retention"]  # type: ignore[method-assign]
        store.worklist.forget_expired = injected["worklist_expiry"]  # type: ignore[method-assign]
        store.deliveries.next_batch = injected["push:dicomweb"]  # type: ignore[method-assign]
        store.record_event = injected["ups_watch"]  # type: ignore[method-assign]
        running = asyncio.create_task(gateway.run())
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}",
                                         headers={"Authorization": f"Bearer {token}"}, timeout=10) as api:

                async def components() -> dict[str, Any]:
                    answer = await api.get("/api/v1/status")
                    answer.raise_for_status()
                    result: dict[str, Any] = answer.json()["components"]
                    return result

                await eventually(lambda: api_ready(api), "the API answers")
                await asyncio.wait_for(asyncio.gather(*(b.failed.wait() for b in injected.values())), WAIT_S)
                shown = await components()
                for name in injected:
                    job = shown[f"job:{name}"]
                    assert job["state"] == "failing", (name, job)
                    assert "injected" in job["last_error"], (name, job)
                metrics = (await api.get("/api/v1/metrics")).text
                assert 'vmgateway_job_failing{background_job="retention"} 1.0' in metrics
                for breakable in injected.values():
                    breakable.broken = False

                async def all_recovered() -> bool:
                    jobs = {name: (await components())[f"job:{name}"] for name in injected}
                    return all(job["state"] == "ok" and job["failures"] >= 1 for job in jobs.values())

                await eventually(all_recovered, "every job recovers")
                shown = await components()
                # Long-running jobs are restarted. (The PACS poll is not among them: between polls it
                # reads nothing from the journal since its settings left it.)
                for name in ("push:dicomweb", "ups_watch"):
                    assert shown[f"job:{name}"]["restarts"] >= 1, name
                assert shown["dicom"]["state"] == "running" and shown["hl7"]["state"] == "running"
                metrics = (await api.get("/api/v1/metrics")).text
                assert 'vmgateway_job_failing{background_job="retention"} 0.0' in metrics
                assert 'vmgateway_job_restarts_total{background_job="ups_watch"}' in metrics
        finally:
            gateway.request_stop()
            await asyncio.wait_for(running, WAIT_S)

    temporary_folder = tempfile.tempdir
    try:
        asyncio.run(scenario())
    finally:
        tempfile.tempdir = temporary_folder


async def api_ready(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/api/v1/health")).status_code == 200
    except httpx.TransportError:
        return False
