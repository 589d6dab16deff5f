"""The checks, each on its own: a technician should be able to read one and know what it tried.

Every check takes the settings and returns findings; none changes anything on the box or at
its peers (the DICOM and PACS checks are C-ECHOs, the upstream check an OPTIONS request).
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509

from vmgateway.addresses import local_address
from vmgateway.api.tls import certificate_files
from vmgateway.clock import clock_synchronised
from vmgateway.config import Settings
from vmgateway.dicom.echo import echo, echo_own_listener
from vmgateway.doctor.firewall import check_firewall
from vmgateway.doctor.report import Finding, Level, fail, ok, warn
from vmgateway.files import free_mb
from vmgateway.model import OWN_TEST_AE_PREFIX
from vmgateway.overall import Facts, assess
from vmgateway.power.nut import NutError
from vmgateway.power.reading import read_ups
from vmgateway.power.state import PowerState
from vmgateway.records import TransfersReport
from vmgateway.site.form import form_problems
from vmgateway.store.report import NoJournal, transfers_report
from vmgateway.transfers import upstream
from vmgateway.upgrade.layout import Layout
from vmgateway.upgrade.state import UpgradeState
from vmgateway.when import duration

DOCTOR_AE = f"{OWN_TEST_AE_PREFIX}DOCTOR"
"""Our calling AE title for the C-ECHO to the gateway itself (it shows among the senders seen)."""
CERTIFICATE_WARN_DAYS = 30
TIMEOUT_S = 5
SERVICE = "systemctl status vmgateway; journalctl -u vmgateway -n 50"
EARLIEST_SANE_TIME = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
"""Before this, the clock is certainly wrong (older than this release): TLS and StudyDate polls fail."""


def check_form(settings: Settings) -> list[Finding]:
    problems = form_problems(settings)
    if problems:
        return [warn("site", f"the clinic's form is incomplete: {'; '.join(problems)}", "vmgateway site init")]
    return [ok("site", f"{settings.site.name}, router option {settings.site.router_option}")]


def check_listeners(settings: Settings) -> list[Finding]:
    findings = []
    dicom = settings.dicom
    answer = echo_own_listener(dicom, DOCTOR_AE, TIMEOUT_S)
    findings.append(ok("dicom", f"port {dicom.port} answers C-ECHO as {dicom.ae_title}") if answer.ok else
                    fail("dicom", f"port {dicom.port}: {answer.message}", f"is the gateway running? {SERVICE}"))
    findings.append(_accepts("hl7", settings.hl7.bind, settings.hl7.port))
    findings += [_accepts(f"astm {listener.name}", listener.bind, listener.port)
                 for listener in settings.astm.listeners]
    api = settings.api
    url = api.local_url("/api/v1/health")
    try:
        # Our own API on loopback: its certificate is pinned by Vetmanager, not by us.
        status = httpx.get(url, verify=False, timeout=TIMEOUT_S, trust_env=False).status_code
    except httpx.HTTPError as exc:
        findings.append(fail("api", f"port {api.port}: {exc}", f"is the gateway running? {SERVICE}"))
    else:
        findings.append(ok("api", f"port {api.port} answers /api/v1/health") if status == 200 else
                        fail("api", f"port {api.port} answered HTTP {status} to /api/v1/health", SERVICE))
    return findings


def _accepts(check: str, bind: str, port: int) -> Finding:
    """A stream listener (HL7, ASTM) takes a connection; nothing is sent on it."""
    try:
        socket.create_connection((local_address(bind), port), timeout=TIMEOUT_S).close()
    except OSError as exc:
        return fail(check, f"port {port}: {exc.strerror or exc}", f"is the gateway running? {SERVICE}")
    return ok(check, f"port {port} accepts connections")


def check_disk(settings: Settings) -> list[Finding]:
    storage = settings.storage
    free = free_mb(storage.data_dir)
    summary = f"{free:,.0f} MB free for {storage.data_dir}"
    if free < storage.min_free_mb:
        return [fail("disk", f"{summary}: under storage.min_free_mb = {storage.min_free_mb}, nothing is accepted",
                     "free space on that file system; delivered files go after storage.keep_delivered_days")]
    if free < storage.soft_min_free_mb:
        return [warn("disk", f"{summary}: under storage.soft_min_free_mb = {storage.soft_min_free_mb}",
                     "delivered files are being removed early; is something undelivered piling up? vmgateway status")]
    return [ok("disk", summary)]


def check_clock(settings: Settings) -> list[Finding]:
    now = datetime.datetime.now(datetime.UTC)
    if now < EARLIEST_SANE_TIME:
        return [fail("clock", f"the clock says {now:%Y-%m-%d %H:%M} UTC, which cannot be right",
                     "set the time (timedatectl set-ntp true), or TLS and PACS polls fail")]
    synchronised = clock_synchronised()
    if synchronised is False:
        return [warn("clock", f"{now:%Y-%m-%d %H:%M:%S} UTC, not synchronised",
                     "timedatectl set-ntp true; check that NTP (UDP 123) may leave the clinic's network")]
    return [ok("clock", f"{now:%Y-%m-%d %H:%M:%S} UTC" + (", synchronised" if synchronised else ""))]


def check_ups(settings: Settings) -> list[Finding]:
    power = settings.power
    if not power.enabled:
        return [warn("ups", "power.enabled = false: a power cut stops the gateway without a drain",
                     "connect the UPS by USB and set power.enabled = true")]

    try:
        reading = read_ups(power, TIMEOUT_S)
    except NutError as exc:
        return [fail("ups", str(exc), "systemctl status nut-server nut-driver@ups; is the UPS's USB cable in?")]
    if reading.state is PowerState.ONLINE:
        return [ok("ups", reading.describe())]
    if reading.state is PowerState.ON_BATTERY:
        return [warn("ups", reading.describe(), "mains power is out at the box: check the socket and the fuse")]
    return [fail("ups", reading.describe(), "the gateway drains and the box shuts down soon; restore mains power")]


def check_pacs(settings: Settings) -> list[Finding]:
    pacs = settings.pacs
    if not pacs.host:
        return []
    answer = echo(pacs.host, pacs.port, settings.dicom.ae_title, pacs.ae_title or "ANY-SCP", pacs.timeout_s)
    if answer.ok:
        return [ok("pacs", answer.message)]
    return [fail("pacs", answer.message, f"is the PACS on? Is {settings.dicom.ae_title} (this box, port"
                 f" {settings.dicom.port}) registered there? pacs.host/port/ae_title as the clinic's PACS says?")]


def check_upstream(settings: Settings) -> list[Finding]:
    transfers = settings.transfers
    if transfers.mode != "push":
        return []
    findings = []
    for key in ("dicomweb_url", "hl7_url", "astm_url"):
        url = getattr(transfers, key)
        if url:
            findings.append(_probe(settings, key, url))
    return findings


def _probe(settings: Settings, key: str, url: str) -> Finding:
    """OPTIONS with our TLS and credentials: any answer but 401/403/407 or a 5xx means it would work."""

    async def options() -> int:
        async with upstream.client(settings.transfers) as client:
            return (await client.options(url, timeout=TIMEOUT_S * 2)).status_code

    name = f"upstream ({key.removesuffix('_url')})"
    try:
        status = asyncio.run(options())
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        advice = ("transfers.ca_file / pinned_cert: does the upstream's certificate match?"
                  if "CERTIFICATE" in str(exc) else "is the address right, and may the box reach it (router)?")
        return fail(name, f"{url}: {exc.__class__.__name__} {exc}".strip(), advice)
    if status in (401, 403, 407):
        return fail(name, f"{url} refuses our credentials (HTTP {status})",
                    "transfers.auth and the token or password file: ask Vetmanager for valid ones")
    if status in (404, 410):
        return fail(name, f"{url} does not exist there (HTTP {status}); transfers would pause on it",
                    f"transfers.{key}: ask Vetmanager for the right URL")
    if status >= 500 and status != 501:
        return warn(name, f"{url} answers HTTP {status}", "the upstream has trouble; transfers wait and retry")
    return ok(name, f"{url} reachable (HTTP {status})")


def check_transfers(settings: Settings) -> list[Finding]:
    """Items that will not reach Vetmanager as things stand: dead ones, or waiting ones while
    transfers are off (after commissioning) or waiting longer than transfers.max_wait_s."""
    try:
        report = transfers_report(settings.journal_path)
    except NoJournal:
        return []
    findings = []
    if report.dead:
        findings.append(fail("transfers", f"{report.dead} item(s) dead: given up on after refusals or"
                             f" {settings.transfers.max_age_h:g} h undelivered",
                             "see why on the status page or GET /api/v1/transfers/dead; once the cause is"
                             " fixed, retry them there (POST /api/v1/transfers/retry)"))
    waited = time.time() - report.oldest_waiting_at if report.oldest_waiting_at is not None else 0.0
    waiting = f"{report.waiting} item(s) waiting, the oldest for {duration(waited)}"
    if report.waiting and not report.active:
        findings.append(warn("transfers", f"transfers are off; {waiting}",
                             "Vetmanager activates transfers once the box is commissioned"
                             " (POST /api/v1/transfers/activate); until then items wait, and nothing is lost"))
    elif report.active and waited > settings.transfers.max_wait_s:
        findings.append(warn("transfers", f"{waiting} (more than transfers.max_wait_s ="
                             f" {duration(settings.transfers.max_wait_s)})",
                             "is Vetmanager fetching (pull) or is the destination answering (push)? See status"))
    if not findings:
        state = "on" if report.active else "off"
        findings.append(ok("transfers", f"transfers {state}; " + (waiting if report.waiting else "nothing waiting")))
    return findings


def _certificates(settings: Settings) -> list[tuple[str, Path]]:
    api_cert = settings.api.tls_cert or certificate_files(settings.storage.data_dir)[0]
    named = [("API certificate", api_cert if settings.api.tls else None),
             ("upstream client certificate", settings.transfers.client_cert),
             ("pinned upstream certificate", settings.transfers.pinned_cert)]
    return [(name, path) for name, path in named if path is not None and path.exists()]


def check_certificates(settings: Settings) -> list[Finding]:
    findings = []
    now = time.time()
    for name, path in _certificates(settings):
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (ValueError, OSError) as exc:
            findings.append(fail("certificate", f"{name} {path} cannot be read: {exc}", "replace the file"))
            continue
        days = (certificate.not_valid_after_utc.timestamp() - now) / 86400
        summary = f"{name} {path} valid until {certificate.not_valid_after_utc:%Y-%m-%d}"
        if days < 0:
            findings.append(fail("certificate", f"{name} {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}",
                                 "replace it (for the API's self-signed one: delete it and restart the gateway)"))
        elif days < CERTIFICATE_WARN_DAYS:
            findings.append(warn("certificate", f"{summary}: {days:.0f} days left", "replace it before then"))
        else:
            findings.append(ok("certificate", summary))
    return findings


def check_release(settings: Settings) -> list[Finding]:
    """What `vmgateway upgrade` left: a release still on trial, or one that failed."""
    layout = Layout(settings.upgrade.root)
    if not layout.state_file.exists():
        return []
    state = UpgradeState.load(layout.state_file)
    running = layout.current_version()
    if state.trial:
        return [fail("release", f"release {state.trial} is on trial (listening on loopback only) and no upgrade"
                     " is settling it", "vmgateway upgrade --recover")]
    summary = f"{running} committed" + (f", previous {state.previous}" if state.previous else "")
    if state.failed:
        return [warn("release", f"{summary}; failed: {', '.join(state.failed)}",
                     f"the failed releases' logs are in {layout.logs}")]
    return [ok("release", summary)]


CHECKS: dict[str, Callable[[Settings], list[Finding]]] = {
    "site": check_form,
    "listeners": check_listeners,
    "disk": check_disk,
    "clock": check_clock,
    "ups": check_ups,
    "pacs": check_pacs,
    "upstream": check_upstream,
    "transfers": check_transfers,
    "certificates": check_certificates,
    "release": check_release,
    "firewall": lambda settings: [check_firewall(settings)],
}
"""In the order they are shown; `vmgateway doctor --skip NAME` leaves one out."""


_UPS_STATES = {Level.OK: "online", Level.WARN: "on_battery", Level.FAIL: "low_battery or unreadable"}
_COMPONENTS = ("dicom", "hl7", "api", "pacs")
"""Checks whose failure is a component failing (ASTM listeners are `astm NAME`)."""


def overall(settings: Settings, findings: list[Finding]) -> Finding:
    """The overall state as the page and /api/v1/status judge it (vmgateway.overall.assess), from
    what this doctor found: the journal's queue and switch, its UPS, disk, clock, listener and
    upstream checks. Said first, so that the technician's first line agrees with Vetmanager's page."""
    try:
        report = transfers_report(settings.journal_path)
    except NoJournal:
        report = TransfersReport(active=False, commissioned=False, waiting=0, dead=0, oldest_waiting_at=None)
    failed = [f for f in findings if f.level is Level.FAIL]
    ups = [f for f in findings if f.check == "ups"]
    clock = [f for f in findings if f.check == "clock"]
    oldest = report.oldest_waiting_at
    facts = Facts(
        commissioned=report.commissioned, transfers_active=report.active, waiting=report.waiting,
        dead=report.dead, oldest_waiting_s=None if oldest is None else max(0.0, time.time() - oldest),
        max_wait_s=settings.transfers.max_wait_s,
        destinations={f.check.removeprefix("upstream (").removesuffix(")"):
                      {"state": "paused", "last_error": f.summary}  # what the sender would do
                      for f in failed if f.check.startswith("upstream")},
        power=None if not ups or not settings.power.enabled else _UPS_STATES[ups[0].level],
        disk_low=any(f.check == "disk" for f in failed),
        clock_synchronised=clock[0].level is Level.OK if clock else None,  # a skipped check counts for nothing
        failing=[f.check for f in failed if f.check in _COMPONENTS or f.check.startswith("astm ")])
    verdict = assess(facts)
    if verdict.state == "all_well":
        return ok("overall", "all well")
    if verdict.state == "commissioning":
        return ok("overall", f"commissioning: {'; '.join(verdict.to_do)}")
    worst = max((f.level for f in findings), default=Level.WARN)
    said = fail if worst is Level.FAIL else warn
    return said("overall", "attention: " + "; ".join(r.text for r in verdict.reasons),
                "; ".join(dict.fromkeys(r.advice for r in verdict.reasons)))
