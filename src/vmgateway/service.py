"""Composes the gateway: store, receivers, background tasks; start, drain, stop.

One process, one asyncio event loop. pynetdicom runs associations in its own threads;
blocking calls into it or the store are made with `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from vmgateway import __version__
from vmgateway.config import Settings
from vmgateway.dicom.receiver import DicomReceiver
from vmgateway.dicom.studies import complete_quiet_studies
from vmgateway.hl7.receiver import Hl7Receiver
from vmgateway.store import Store

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The gateway could not start (port taken, data folder unusable, …)."""


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.storage.data_dir, settings.storage.min_free_mb)
        self.dicom = DicomReceiver(settings.dicom, self.store)
        self.hl7 = Hl7Receiver(settings.hl7, self.store)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until SIGINT/SIGTERM (or request_stop), then drain and stop cleanly."""
        loop = asyncio.get_running_loop()
        # Background work (HL7 details, DICOM threads) holds the GIL for up to the switch
        # interval (5 ms by default) before an ACK waiting in the event loop gets it back.
        sys.setswitchinterval(0.0005)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            self.store.open()
        except Exception as exc:
            raise StartupError(f"cannot open the store in {self.settings.storage.data_dir}: {exc}") from exc
        try:
            self.store.record_event("start", f"vmgateway {__version__}")
            try:
                self.dicom.start()
            except OSError as exc:
                cfg = self.settings.dicom
                raise StartupError(f"cannot listen for DICOM on {cfg.bind}:{cfg.port}: {exc.strerror or exc}") from exc
            try:
                await self.hl7.start()
            except OSError as exc:
                await asyncio.to_thread(self.dicom.drain, 0)
                hl7 = self.settings.hl7
                raise StartupError(f"cannot listen for HL7 on {hl7.bind}:{hl7.port}: {exc.strerror or exc}") from exc
            sweeper = asyncio.create_task(complete_quiet_studies(self.store, self.settings.dicom.stable_after_s))
            log.info("gateway running", extra={"version": __version__, "data_dir": str(self.settings.storage.data_dir)})
            await self._stop.wait()
            log.info("gateway stopping")
            aborted, _ = await asyncio.gather(
                asyncio.to_thread(self.dicom.drain, self.settings.dicom.drain_timeout_s),
                self.hl7.drain(self.settings.hl7.drain_timeout_s),
            )
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            self.store.record_event("stop", f"clean; {aborted} association(s) aborted")
        finally:
            self.store.close()
        log.info("gateway stopped")
