"""The poll loop: every pacs.interval_s (or when asked), find what the PACS has that the
gateway does not, and fetch exactly that.

What is missing is decided by SOP Instance UIDs, never by comparing totals: the gateway may also
hold instances the PACS lacks (a modality sent them straight to it), and a study where the PACS
counts no more than the gateway could still hide an instance only the PACS has — it once did, for
good. Cheaply: a study's series are listed with their counts, and instance UIDs are asked for only
where a series' count differs in either direction. A study found complete this way is not looked
into again while neither its count on the PACS nor the gateway's holdings change (after a start,
each study in range is looked into once). Left blind: a series where both sides hold the same
number of instances but not the same ones. A failed or partial fetch is simply found again by the
next poll. A PACS that is down is retried with backoff and shown in status; it disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from vmgateway.backoff import backoff
from vmgateway.config import PacsConfig, Settings
from vmgateway.dicom.pynetdicom_setup import configure
from vmgateway.pacs.query import PacsError, associate, find_instances, find_series, find_studies
from vmgateway.pacs.retrieve import Wanted, fetch_by_get, fetch_by_move
from vmgateway.store import JournalError, Store

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 1800.0
STOPPING = {"ok": False, "error": "the gateway is stopping"}


@dataclass
class PollResult:
    studies: int = 0
    """Studies the PACS listed in the date range."""
    missing: int = 0
    """Instances found missing."""
    fetched: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"studies": self.studies, "missing": self.missing, "fetched": self.fetched,
                "problems": self.problems}


Complete = dict[str, tuple[int, int]]
"""Study Instance UID → (instances on the PACS, instances held) when a poll found nothing missing."""


def poll_once(config: PacsConfig, calling_ae: str, store: Store, complete: Complete) -> PollResult:
    """One poll, blocking (pynetdicom); raises PacsError when the PACS cannot be asked at all.
    `complete` is kept from poll to poll by the caller (and updated here)."""
    result = PollResult()
    wanted: list[Wanted] = []
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = associate(ae, config)
    try:
        studies = find_studies(assoc, config.lookback_days)
        result.studies = len(studies)
        for study in studies:
            uid = study.study_instance_uid
            held = store.held_instances(uid)
            counts = None if study.instances is None else (study.instances, sum(len(s) for s in held.values()))
            if counts is not None and complete.get(uid) == counts:
                continue
            missing_here = _missing_in_study(assoc, uid, held)
            wanted += missing_here
            if not missing_here and counts is not None:
                complete[uid] = counts
        for gone in complete.keys() - {study.study_instance_uid for study in studies}:
            del complete[gone]  # out of the date range: no longer asked about
    finally:
        assoc.release()
    if not wanted:
        return result
    result.missing = sum(len(missing) for _, _, missing in wanted)
    if config.retrieve == "get":
        fetched = fetch_by_get(config, calling_ae, store, wanted)
        result.fetched = len(set(fetched.kept) & {i.sop_instance_uid for _, _, missing in wanted for i in missing})
    else:
        fetched = fetch_by_move(config, calling_ae, wanted)
        result.fetched = result.missing - fetched.failed if not fetched.problems else 0
    result.problems += fetched.problems
    return result


def _missing_in_study(assoc: Any, study_uid: str, held: dict[str, set[str]]) -> list[Wanted]:
    """The study's instances on the PACS that the gateway lacks, series by series: instance UIDs
    are asked for only where the series' count differs from what is held (or is not given)."""
    wanted: list[Wanted] = []
    for series in find_series(assoc, study_uid):
        have = held.get(series.series_instance_uid, set())
        if series.instances is not None and series.instances == len(have):
            continue
        missing = [i for i in find_instances(assoc, study_uid, series.series_instance_uid)
                   if i.sop_instance_uid not in have]
        if missing:
            wanted.append((study_uid, series.series_instance_uid, missing))
    return wanted


class PacsPoller:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        configure(store)  # C-GET receives through pynetdicom, whichever engine listens on port 4006
        self.state: dict[str, Any] = {"state": "off", "last_poll_at": None, "last_success_at": None,
                                      "last_error": None, "last_result": None, "failures_in_a_row": 0,
                                      "next_poll_at": None}
        self._asked = asyncio.Event()
        self._waiting: list[asyncio.Future[dict[str, Any]]] = []
        self._stopping = False
        self._complete: Complete = {}
        self._complete_on: tuple[str, int, str] | None = None
        """The PACS `_complete` speaks of (a remote change may point the poller at another)."""

    def stop_starting(self) -> None:
        """A drain: no new poll; `run` returns once a poll under way has finished."""
        self._stopping = True
        self._asked.set()

    def reconfigured(self) -> None:
        """The PACS settings changed (remotely): the next round starts now, not an interval later,
        so a poll switched on polls at once. Called on the poller's loop."""
        self._asked.set()

    async def poll_now(self) -> dict[str, Any]:
        """Ask for a poll at once and wait for its outcome (a technician's or Vetmanager's check)."""
        if self._stopping:
            return dict(STOPPING)
        outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(outcome)
        self._asked.set()
        return await outcome

    async def run(self) -> None:
        """Poll until cancelled or drained."""
        failures = 0
        while not self._stopping:
            self._asked.clear()  # before the poll: a request that comes during it is served next
            config = self.settings.pacs  # read every round: a remote change applies at once
            wait = config.interval_s
            if config.poll or self._waiting:
                failures = await self._poll(config, failures)
                wait = _backoff(config, failures)
            else:
                self.state.update(state="off", next_poll_at=None)
            try:
                async with asyncio.timeout(wait):
                    await self._asked.wait()
            except TimeoutError:
                pass
        for outcome in self._waiting:  # asked for during the last poll: it will not come
            outcome.set_result(dict(STOPPING))
        self._waiting.clear()
        self.state.update(state="off", next_poll_at=None)

    async def _poll(self, config: PacsConfig, failures: int) -> int:
        """Poll once, note the outcome; return the number of failures in a row. Whoever asked
        for this poll is answered whatever happens: an unexpected error is a failed poll too."""
        waiting, self._waiting = self._waiting, []
        self.state["state"] = "polling"
        self.state["last_poll_at"] = time.time()
        answer: dict[str, Any] = {"ok": False, "error": "the poll did not finish"}
        try:
            if not (config.host and config.ae_title):
                raise PacsError("no PACS configured (pacs.host, pacs.ae_title)")
            if (config.host, config.port, config.ae_title) != self._complete_on:
                self._complete.clear()
                self._complete_on = (config.host, config.port, config.ae_title)
            result = await asyncio.to_thread(poll_once, config, self.settings.dicom.ae_title, self.store,
                                           self._complete)
        except Exception as exc:
            if not isinstance(exc, PacsError):
                log.exception("pacs poll failed unexpectedly")
            failures += 1
            self.state.update(state="failing", last_error=str(exc), last_error_at=time.time())
            self._note_next_poll(config, failures)
            log.warning("pacs poll failed", extra={"error": str(exc), "failures_in_a_row": failures})
            answer = {"ok": False, "error": str(exc)}
        else:
            failures = 0
            self.state.update(state="ok" if not result.problems else "partial", last_success_at=time.time(),
                              last_result=result.as_dict())
            self._note_next_poll(config, failures)
            if result.problems:
                self.state.update(last_error="; ".join(result.problems), last_error_at=time.time())
            # A poll that found nothing new is routine: at debug, or the log says it every minute.
            log.log(logging.INFO if result.fetched or result.missing or result.problems else logging.DEBUG,
                    "pacs polled", extra=result.as_dict())
            answer = {"ok": not result.problems} | result.as_dict()
            if result.fetched:
                try:
                    await self.store.record_event("pacs_fetch",
                                                  f"{result.fetched} instance(s) fetched from {config.ae_title}")
                except JournalError as exc:  # the instances are kept: only the note is missing
                    log.warning("pacs fetch event not recorded", extra={"error": str(exc)})
        finally:
            for outcome in waiting:
                if not outcome.done():
                    outcome.set_result(answer)
        return failures

    def _note_next_poll(self, config: PacsConfig, failures: int) -> None:
        """Before the outcome is logged, so that whoever reads the log and then status sees both."""
        self.state.update(failures_in_a_row=failures,
                          next_poll_at=time.time() + _backoff(config, failures) if config.poll else None)


def _backoff(config: PacsConfig, failures: int) -> float:
    """interval_s after a success; doubling with each failure in a row, up to 30 minutes."""
    return backoff(failures, config.interval_s, max(MAX_BACKOFF_S, config.interval_s))
