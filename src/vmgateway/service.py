"""Composes the gateway: store, receivers, background tasks; start, drain, stop.

One process, one asyncio event loop, which serves every port (DICOM too, unless
`dicom.engine = "pynetdicom"`: then pynetdicom runs associations in its own threads). Blocking
calls into pynetdicom or the store are made with `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from vmgateway import __version__
from vmgateway.api.app import GatewayView
from vmgateway.api.server import ApiServer
from vmgateway.astm.receiver import AstmReceiver
from vmgateway.config import ConfigError, Settings
from vmgateway.dicom.acceptor import AsyncioDicomReceiver
from vmgateway.dicom.receiver import PynetdicomReceiver
from vmgateway.dicom.studies import complete_quiet_studies, completion_interval, remove_abandoned_transfers
from vmgateway.hl7.receiver import Hl7Receiver
from vmgateway.host.systemd import Notifier
from vmgateway.jobs import Jobs
from vmgateway.lab.orders import LabDesk
from vmgateway.lab.sender import InstrumentSender
from vmgateway.logs import LastProblems
from vmgateway.pacs.poller import PacsPoller
from vmgateway.power.monitor import PowerMonitor
from vmgateway.records import StartupCheck
from vmgateway.remote_settings import RefusedChange, change
from vmgateway.store import DataFolderBusy, Store
from vmgateway.store.access import SITE_CONTACT, SITE_PACS
from vmgateway.transfers.retention import INTERVAL_S as RETENTION_INTERVAL_S
from vmgateway.transfers.retention import remove_delivered_files
from vmgateway.upgrade.layout import Layout
from vmgateway.worklist.expiry import EVERY_S as EXPIRY_INTERVAL_S
from vmgateway.worklist.expiry import forget_expired_entries

if TYPE_CHECKING:
    from vmgateway.transfers.worker import Destination

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The gateway could not start (port taken, data folder unusable, …)."""


class Gateway:
    def __init__(self, settings: Settings, settings_file: str | None = None) -> None:
        self.settings = settings
        self.settings_file = settings_file
        self.store = Store(settings.storage.data_dir, settings.storage.min_free_mb)
        self.dicom = (AsyncioDicomReceiver if settings.dicom.engine == "asyncio" else PynetdicomReceiver)(
            settings.dicom, self.store)
        self.hl7 = Hl7Receiver(settings.hl7, self.store)
        self.jobs = Jobs()
        self.astm = AstmReceiver(settings.astm, self.store, LabDesk(self.store.lab, settings.lab.instruments),
                                 self.jobs)
        self.power = PowerMonitor(settings.power, self.store, self._drain_for_power) if settings.power.enabled else None
        self.destinations: list[Destination] = []
        self.pacs = PacsPoller(settings, self.store)
        self.instruments = [InstrumentSender(instrument, settings.lab, self.store)
                            for instrument in settings.lab.instruments]
        self.api = ApiServer(GatewayView(settings, self.store, time.time(), self._components, self.jobs.states,
                                         self._power, self._destinations, lambda: self.pacs.state,
                                         self.pacs.poll_now, settings_file, self._apply_remote_settings,
                                         lambda: {s.instrument.name: dict(s.state) for s in self.instruments}))
        self.notifier = Notifier()
        self._running: set[str] = set()
        self._problems = LastProblems()
        logging.getLogger("vmgateway").addHandler(self._problems)
        self._stop = asyncio.Event()
        self._power_failing: str | None = None

    def _components(self) -> dict[str, dict[str, Any]]:
        """The listeners, running or not, with their last problem."""
        return {
            name: {"state": "running" if name in self._running else "stopped",
                   "last_problem": self._problems.last.get(name)}
            for name in ("dicom", "hl7", "astm")
        }

    async def _stop_listeners(self, timeout: float | None) -> int:
        """Drain the receivers side by side, then stop the API; return aborted associations."""
        dicom_timeout = self.settings.dicom.drain_timeout_s if timeout is None else timeout
        hl7_timeout = self.settings.hl7.drain_timeout_s if timeout is None else timeout
        aborted = 0
        waits: list[Any] = []
        if "dicom" in self._running:
            waits.append(self.dicom.drain(dicom_timeout))
        if "hl7" in self._running:
            waits.append(self.hl7.drain(hl7_timeout))
        if "astm" in self._running:
            waits.append(self.astm.drain(self.settings.astm.drain_timeout_s if timeout is None else timeout))
        for result in await asyncio.gather(*waits):
            aborted += result or 0
        self._running -= {"dicom", "hl7", "astm"}
        if "api" in self._running:
            await self.api.stop()
            self._running.discard("api")
        return aborted

    async def _drain(self, timeout: float | None) -> int:
        """Start nothing new, let what runs finish, then stop the jobs; return aborted associations.

        Receivers refuse newcomers; push destinations, the PACS poller and the lab senders start no new request
        but finish those under way, within the longest of the receivers' drain times (or the
        power drain's `timeout`): an upload begun in a drain would only be cut off by the stop.
        """
        finishing = [f"push:{destination.sink.name}" for destination in self.destinations] + ["pacs_poll"]
        finishing += [f"lab:{sender.instrument.name}" for sender in self.instruments]
        finishing += [AstmReceiver.serial_job(port) for port in self.settings.astm.serial]
        stoppable: list[Destination | PacsPoller | InstrumentSender] = [*self.destinations, self.pacs,
                                                                          *self.instruments]
        for job in stoppable:
            job.stop_starting()
        settings = self.settings
        longest = max(settings.dicom.drain_timeout_s, settings.hl7.drain_timeout_s, settings.astm.drain_timeout_s)
        aborted, _ = await asyncio.gather(self._stop_listeners(timeout),
                                          self.jobs.finish(finishing, longest if timeout is None else timeout))
        await self.jobs.stop()
        return aborted

    def _apply_remote_settings(self, changed: Settings, keys: list[str]) -> list[str]:
        """Put remote changes into effect now (remote_settings.CHANGEABLE): the contact person, the
        PACS (the poller reads it every round), who may connect to DICOM and HL7 (asked at each
        association or connection; open ones carry on), a push destination's URL (its next request
        goes there). Returns the keys that wait for the next start: a URL for a destination this
        gateway did not start with, or one taken away."""
        now = self.settings
        dicom = now.dicom.model_copy(update={"allowed_calling_aets": changed.dicom.allowed_calling_aets})
        hl7 = now.hl7.model_copy(update={"allowed_peers": changed.hl7.allowed_peers})
        self.dicom.allow_calling_aets(dicom.allowed_calling_aets)
        self.hl7.allow_peers(hl7.allowed_peers)
        urls, later = {}, []
        running = {destination.sink.name: destination for destination in self.destinations}
        for name in ("dicomweb", "hl7", "astm"):
            key = f"{name}_url"
            url = getattr(changed.transfers, key)
            if url == getattr(now.transfers, key):
                continue
            if name in running and url:
                running[name].retarget(url)
                urls[key] = url
            elif f"transfers.{key}" in keys:
                later.append(f"transfers.{key}")
        self.settings = now.model_copy(update={
            "site": now.site.model_copy(update={"contact": changed.site.contact}), "pacs": changed.pacs,
            "dicom": dicom, "hl7": hl7, "transfers": now.transfers.model_copy(update=urls)})
        self.pacs.settings = self.api.view.settings = self.settings
        if changed.pacs != now.pacs:
            self.pacs.reconfigured()
        return later

    async def _move_remote_settings_out_of_the_journal(self) -> None:
        """Contact and PACS changed through the API were kept in the journal by earlier versions: into
        remote-settings.toml with them, once, so that every command sees them (and then applied)."""
        kept = {name: json.loads(value) for key, name in ((SITE_PACS, "pacs"), (SITE_CONTACT, "site.contact"))
                if (value := await self.store.settings.get(key, ""))}
        if not kept:
            return
        try:
            outcome = await asyncio.to_thread(change, self.settings_file, self.settings.storage.data_dir, kept, None)
        except (RefusedChange, ConfigError, OSError) as exc:
            log.warning("remote settings in the journal not moved", extra={"error": str(exc), "keys": sorted(kept)})
            return
        self._apply_remote_settings(outcome.settings, outcome.changed)
        for key in (SITE_PACS, SITE_CONTACT):
            await self.store.settings.forget(key)
        log.info("remote settings moved out of the journal", extra={"keys": outcome.changed})

    def _power(self) -> dict[str, Any]:
        if self.power is None:
            return {"state": "disabled"}
        return self.power.reading.as_dict()

    def _destinations(self) -> dict[str, dict[str, Any]]:
        return {d.sink.name: {"kind": d.sink.kind} | d.state.as_dict() for d in self.destinations}

    def request_stop(self) -> None:
        self._stop.set()

    def _drain_for_power(self, reason: str) -> None:
        self._power_failing = reason
        self._stop.set()

    async def _report_startup(self, check: StartupCheck) -> None:
        """Record what the store found; a crash or a missing file must be seen by a person."""
        if check.missing_files:
            log.error("recorded items are missing their files", extra={"startup_check": check.describe()})
        elif not check.clean_stop:
            log.warning("recovered after an unclean stop", extra={"startup_check": check.describe()})
        if not check.clean_stop or check.anything_found:
            await self.store.record_event("recovery", check.describe())

    def _shut_down_host(self) -> None:
        """Run `power.shutdown_command`, when one is configured (by default NUT's upsmon does it)."""
        command = self.settings.power.shutdown_command
        if not command:
            return
        log.warning("running the configured shutdown command", extra={"command": command})
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("shutdown command failed", extra={"command": command, "error": str(exc)})
            return
        if result.returncode != 0:
            log.error("shutdown command failed", extra={"command": command, "exit_status": result.returncode,
                                                        "stderr": result.stderr.strip()[-500:]})

    async def _start_listeners(self) -> None:
        """DICOM, HL7, the API and ASTM, in that order; any that cannot listen stops the start
        (those already listening are closed again) with a message naming it and its address."""
        dicom, hl7, api = self.settings.dicom, self.settings.hl7, self.settings.api
        listeners: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
            ("dicom", f"DICOM on {dicom.bind}:{dicom.port}", self.dicom.start),
            ("hl7", f"HL7 on {hl7.bind}:{hl7.port}", self.hl7.start),
            ("api", f"API on {api.bind}:{api.port}", self.api.start),
            ("astm", "ASTM", self.astm.start),
        ]
        for name, what, start in listeners:
            try:
                await start()
            except OSError as exc:
                await self._stop_listeners(0)
                raise StartupError(f"cannot listen for {what}: {exc.strerror or exc}") from exc
            self._running.add(name)

    def _start_jobs(self) -> None:
        """Every piece of background work, under the one supervisor (vmgateway.jobs)."""
        dicom, storage = self.settings.dicom, self.settings.storage
        self.jobs.every("study_completion", completion_interval(dicom.stable_after_s),
                        lambda: complete_quiet_studies(self.store, dicom.stable_after_s))
        self.jobs.every("partial_files", dicom.network_timeout_s,
                        lambda: remove_abandoned_transfers(self.store, dicom.network_timeout_s))
        self.jobs.every("retention", RETENTION_INTERVAL_S, lambda: remove_delivered_files(self.store, storage),
                        first_after_s=0)
        self.jobs.every("worklist_expiry", EXPIRY_INTERVAL_S, lambda: forget_expired_entries(self.store),
                        first_after_s=0)
        self.jobs.run("watchdog", self.notifier.keep_alive)
        self.jobs.run("pacs_poll", self.pacs.run)
        for destination in self.destinations:
            self.jobs.run(f"push:{destination.sink.name}", destination.run)
        for sender in self.instruments:
            self.jobs.run(f"lab:{sender.instrument.name}", sender.run)
        if self.power is not None:
            self.jobs.run("ups_watch", self.power.run)

    async def run(self) -> None:
        """Run until SIGINT/SIGTERM (or request_stop), then drain and stop cleanly."""
        loop = asyncio.get_running_loop()
        # Background work (HL7 details, DICOM threads) holds the GIL for up to the switch
        # interval (5 ms by default) before an ACK waiting in the event loop gets it back.
        sys.setswitchinterval(0.0005)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            check = self.store.open()
        except DataFolderBusy as exc:
            raise StartupError(str(exc)) from exc
        except Exception as exc:
            raise StartupError(f"cannot open the store in {self.settings.storage.data_dir}: {exc}") from exc
        try:
            await self._report_startup(check)
            await self.store.record_event("start", f"vmgateway {__version__}")
            unsigned = Layout(self.settings.upgrade.root).unsigned_note(__version__)
            if unsigned is not None:  # the box runs code nobody signed: said at every start
                log.warning("this release runs unsigned", extra={"version": __version__, "note": unsigned})
                await self.store.record_event("audit", f"release {__version__} runs unsigned: {unsigned}")
            await self._move_remote_settings_out_of_the_journal()
            gateway_id = await self.store.settings.gateway_id()  # made at the first start
            if self.settings.transfers.mode == "push":
                # Imported only here: httpx and the sinks cost 5 MB that a pull-mode box never uses.
                from vmgateway.transfers import destinations
                self.destinations = destinations.build(self.settings.transfers, self.store, gateway_id)
            await self._start_listeners()
            self._start_jobs()
            log.info("gateway running", extra={"version": __version__, "data_dir": str(self.settings.storage.data_dir)})
            self.notifier.ready("receiving")
            await self._stop.wait()
            reason = self._power_failing or "stop requested"
            log.info("gateway stopping", extra={"reason": reason})
            self.notifier.stopping(f"draining: {reason}")
            aborted = await self._drain(self.settings.power.drain_timeout_s if self._power_failing else None)
            for destination in self.destinations:
                await destination.close()
            await self.store.record_event("stop", f"clean ({reason}); {aborted} association(s) aborted")
        finally:
            await self.dicom.close()
            self.store.close()
        log.info("gateway stopped")
        if self._power_failing:
            self._shut_down_host()
