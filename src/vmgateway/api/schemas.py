"""The API's answers as types: what `docs/openapi.json` promises and a generated client returns.

Each route declares one of these as its response model, so FastAPI checks every answer against
it before it leaves. Fields are closed (`extra="forbid"`): a field the store starts to return
but nobody declared here fails the tests at once, rather than being served undocumented (or
silently dropped). Times are Unix times in seconds (UTC), as the journal keeps them.
(No `from __future__ import annotations`: pydantic and FastAPI read the annotations at run time.)
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vmgateway.config import PacsConfig, Settings, SiteConfig
from vmgateway.lab.order import LabOrder
from vmgateway.model import SenderProtocol
from vmgateway.worklist.entry import WorklistEntry

UnixTime = float
"""Seconds since 1970-01-01 UTC."""


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Answer):
    """Every error answer (4xx, 5xx): what went wrong and, where there is one, what to do."""

    detail: str


_ERRORS = {
    400: "The request contradicts itself (the detail says how).",
    401: "No valid token: send `Authorization: Bearer TOKEN`.",
    403: "A monitoring token: it reads /api/v1/status and /api/v1/metrics only.",
    404: "Nothing by that ID.",
    409: "Not now, or not like this: the detail says why (e.g. transfers not active yet).",
    410: "Gone: the item's file was removed after delivery (storage.keep_delivered_days), or lost on the disk.",
    413: "The body is larger than api.max_body_bytes.",
    429: "Too many wrong tokens from this address: wait a minute.",
    503: "The journal did not take a write.",
}


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The error answers a route documents (each a Problem); 401, 403 and 429 go with every token."""
    return {code: {"model": Problem, "description": _ERRORS[code]} for code in codes}


# -- the gateway as a whole ---------------------------------------------------------------------

class Health(Answer):
    status: Literal["ok"]
    journal: Literal["written"] | None = Field(default=None, description="With deep=true: the journal took a write.")


class Reason(Answer):
    code: str = Field(description="Stable for programs: transfers_off, dead_items, destination, waiting_too_long,"
                                  " power, disk, clock, component.")
    text: str
    advice: str = Field(description="What to do about it.")


class Overall(Answer):
    """The one overall state (vmgateway.overall): page, status, metrics and doctor say the same."""

    state: Literal["commissioning", "all_well", "attention"]
    reasons: list[Reason]
    to_do: list[str] = Field(description="While commissioning: what is left to do.")


class LastProblem(Answer):
    at: UnixTime
    level: str
    message: str


class Listener(Answer):
    """A receiver (dicom, hl7, astm)."""

    state: Literal["running", "stopped"]
    last_problem: LastProblem | None = Field(description="Its last warning or error, if any, and when.")


class Job(Answer):
    """A background job (`job:NAME` in components)."""

    state: str = Field(description="starting, ok, failing (backing off), finished or stopped.")
    last_error: str | None
    last_error_at: UnixTime | None
    last_success_at: UnixTime | None
    failures_in_a_row: int
    failures: int
    restarts: int


class Power(Answer):
    """The UPS as last read through NUT (only `state` when none is watched: disabled)."""

    state: Literal["online", "on_battery", "low_battery", "forced_shutdown", "unknown", "disabled"]
    ups_status: str | None = Field(default=None, description="ups.status as upsd says it, e.g. `OB DISCHRG`.")
    battery_charge_percent: float | None = None
    battery_runtime_s: float | None = None
    input_voltage: float | None = None
    load_percent: float | None = None
    error: str | None = Field(default=None, description="Why the state is unknown.")


class PollCounts(Answer):
    """What a PACS poll that could ask the PACS found and fetched."""

    studies: int = Field(description="Studies the PACS listed in the date range.")
    missing: int = Field(description="Instances found missing here.")
    fetched: int
    problems: list[str]


class PollOutcome(Answer):
    """POST /api/v1/pacs/poll: the counts when the PACS could be asked, else `error`."""

    ok: bool
    studies: int | None = Field(default=None, description="Studies the PACS listed in the date range.")
    missing: int | None = Field(default=None, description="Instances found missing here.")
    fetched: int | None = None
    problems: list[str] | None = None
    error: str | None = Field(default=None, description="Why the poll failed as a whole.")


class Pacs(Answer):
    """The PACS poller."""

    state: Literal["off", "polling", "ok", "partial", "failing"]
    last_poll_at: UnixTime | None
    last_success_at: UnixTime | None
    last_error: str | None
    last_error_at: UnixTime | None = None
    last_result: PollCounts | None
    failures_in_a_row: int
    next_poll_at: UnixTime | None


class Destination(Answer):
    """A push destination (dicomweb, hl7, astm)."""

    kind: Literal["dicom", "hl7", "astm"] = Field(description="The items it carries.")
    url: str
    state: Literal["ok", "paused"] = Field(description="paused: backing off after a failure, until paused_until.")
    last_delivered_at: UnixTime | None
    last_error: str | None
    last_error_at: UnixTime | None
    paused_until: UnixTime | None
    in_flight: int
    large_items_held_until: UnixTime | None = Field(description="While large items wait for"
                                                    " transfers.large_items_window: when it opens.")


class KindQueue(Answer):
    waiting: int
    dead: int
    oldest_waiting_at: UnixTime | None = Field(description="When the oldest item of this kind still waiting was"
                                                           " received.")


class TransfersSummary(Answer):
    """Transfers as status shows them among the components."""

    state: Literal["inactive", "active", "attention"]
    mode: Literal["pull", "push"]
    destinations: dict[str, Destination] = Field(description="In push mode, by name (dicomweb, hl7).")
    waiting: int
    dead: int
    queue: dict[str, KindQueue] = Field(description="By item kind (dicom, hl7, astm).")


class Transfers(TransfersSummary):
    """GET /api/v1/transfers: whether transfers are active, and the rest of the summary."""

    active: bool


class Disk(Answer):
    state: Literal["ok", "full"] = Field(description="full: below storage.min_free_mb, nothing more is accepted.")
    free_mb: int
    min_free_mb: int


class Journal(Answer):
    state: Literal["ok", "failing"] = Field(
        description="failing: its commits fail (a disk error, a full disk); nothing is acknowledged until one "
                    "succeeds.")
    last_error: str | None
    failing_since: float | None


class Components(Answer):
    """Every part of the gateway by name; background jobs as `job:NAME` (e.g. `job:push:dicomweb`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Job] = Field(init=False)

    dicom: Listener
    hl7: Listener
    astm: Listener
    power: Power
    pacs: Pacs
    transfers: TransfersSummary
    disk: Disk
    journal: Journal


class Queue(Answer):
    undelivered: int
    oldest_waiting_at: UnixTime | None = Field(description="When the oldest item still waiting was received.")


class KindTotals(Answer):
    items: int
    bytes: int


class Releases(Answer):
    """The box's upgrade history (all null on a box never upgraded)."""

    committed: str | None
    previous: str | None
    on_trial: str | None
    failed: list[str] = Field(description="Releases that failed their trial, newest last.")
    last_upgrade_at: UnixTime | None
    last_rollback_at: UnixTime | None


class Identity(Answer):
    """Who this box is; the same in the metrics (vmgateway_gateway_info) and `vmgateway status --json`."""

    gateway_id: str | None = Field(description="Made once at the first start, kept in the journal.")
    hostname: str
    site: str
    version: str
    started_at: UnixTime | None
    releases: Releases


# -- lab orders ---------------------------------------------------------------------------------

LabMessageState = Literal["queued", "sent", "acknowledged", "failed", "dead"]
LabState = Literal["queued", "sent", "acknowledged", "failed", "dead", "resulted"]


class LabMessage(Answer):
    control: Literal["NW", "XO", "CA"] = Field(description="ORC-1: new order, change, cancellation.")
    control_id: str = Field(description="MSH-10, the same on every resend.")
    state: LabMessageState
    attempts: int
    last_error: str | None = Field(description="Why the last send got no answer.")
    answer: str | None = Field(description="MSA-1 and what the instrument said (MSA-3, ERR).")
    created_at: UnixTime
    answered_at: UnixTime | None


class LabOrderRecord(Answer):
    order_id: str
    instrument: str
    state: LabState = Field(description="Its latest message's: queued → sent → acknowledged, or failed (the"
                                        " instrument refused it), or dead (no answer after lab.max_attempts);"
                                        " resulted once a result for it arrived.")
    cancelled: bool
    last_answer: str | None
    created_at: UnixTime
    updated_at: UnixTime
    order: LabOrder
    messages: list[LabMessage] = Field(description="What went to the instrument for it, oldest first.")


class LabRetried(Answer):
    order_id: str
    requeued: int = Field(description="Dead or failed messages queued again.")


class LabInstrumentState(Answer):
    state: Literal["idle", "sending", "connected", "unreachable"]
    host: str
    port: int
    waiting: int = Field(description="Messages not yet answered.")
    failed: int
    dead: int
    last_answer: str | None
    last_answer_at: UnixTime | None
    last_sent_at: UnixTime | None
    last_error: str | None
    last_error_at: UnixTime | None


class Status(Answer):
    version: str
    site: str
    identity: Identity
    overall: Overall
    uptime_s: float
    components: Components
    transfers_active: bool
    queue: Queue
    received: dict[str, KindTotals] = Field(description="All items ever received, by kind.")
    last_received_at: UnixTime | None
    clock_synchronised: bool | None = Field(description="null when the kernel cannot say.")
    api_certificate_expires_at: UnixTime | None = Field(description="When the API's TLS certificate ends (null"
                                                                    " without TLS).")
    lab: dict[str, LabInstrumentState] = Field(description="Each analyzer lab orders go to ([[lab.instruments]]).")


class Event(Answer):
    id: int
    at: UnixTime
    kind: str = Field(description="start, stop, recovery, power, power_drain, dead, pacs_fetch, audit, …")
    detail: str


class Events(Answer):
    events: list[Event]
    next: int | None = Field(description="The cursor for the next page in the same direction.")


# -- the pull feed ------------------------------------------------------------------------------

class DicomDetails(Answer):
    sop_instance_uid: str
    version: int = Field(description="1, 2, … for each different content sent under one SOP Instance UID.")
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    accession_number: str | None
    modality: str | None
    study_date: str | None
    species: str | None
    breed: str | None
    responsible_person: str | None
    order_id: str | None = Field(description="The worklist order the instance belongs to, when linked.")
    patient_id: str | None
    patient_name: str | None


class Hl7Details(Answer):
    sending_application: str
    sending_facility: str
    message_type: str
    control_id: str = Field(description="MSH-10.")
    processing_id: str = Field(description="MSH-11: P production, T test (the gateway's own tests), D debugging.")
    version: str
    charset: str = Field(description="MSH-18 as declared.")
    charset_used: str | None = Field(description="The character set the message was read in.")
    placer_order_number: str | None
    filler_order_number: str | None
    observation_count: int | None
    patient_id: str | None
    patient_name: str | None


class AstmDetails(Answer):
    listener: str
    instrument: str
    sample_ids: str
    patient_ids: str
    test_codes: str
    result_count: int


class LabLink(Answer):
    order_id: str


class Item(Answer):
    """One thing received: a DICOM instance, an HL7 message or an ASTM message."""

    id: int
    kind: Literal["dicom", "hl7", "astm"]
    state: Literal["received", "delivered", "dead"]
    received_at: UnixTime
    sender: str = Field(description="Calling AE title, MSH-3^MSH-4, or the ASTM instrument.")
    peer_address: str
    size: int
    sha256: str
    delivered_at: UnixTime | None
    dicom: DicomDetails | None = None
    hl7: Hl7Details | None = None
    astm: AstmDetails | None = None
    lab: LabLink | None = Field(default=None, description="The lab order this result answers (HL7 OBR-2, an ASTM"
                                                         " sample id), when it is one of Vetmanager's.")


class FeedPage(Answer):
    items: list[Item]
    next: int = Field(description="The cursor (an item ID) for the next page.")


class Acknowledged(Answer):
    delivered: list[int] = Field(description="The IDs that were not delivered before this call.")


class StudyInstance(Answer):
    item_id: int
    sop_instance_uid: str
    version: int
    series_instance_uid: str | None


class Study(Answer):
    study_instance_uid: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None
    modalities: str
    instance_count: int
    first_received_at: UnixTime
    last_received_at: UnixTime
    completed_at: UnixTime | None
    instances: list[StudyInstance]


class StudiesPage(Answer):
    studies: list[Study]
    next: str = Field(description="The cursor (a Study Instance UID) for the next page.")


# -- transfers ----------------------------------------------------------------------------------

class DeadItem(Answer):
    id: int
    kind: Literal["dicom", "hl7", "astm"]
    received_at: UnixTime
    sender: str
    size: int
    attempts: int
    last_error: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    control_id: str | None
    sending_application: str | None


class DeadPage(Answer):
    items: list[DeadItem]
    next: int


class Retried(Answer):
    retried: list[int]


class Switched(Answer):
    active: bool


# -- site, devices, tests -----------------------------------------------------------------------

class Site(Answer):
    site: SiteConfig
    pacs: PacsConfig


class Device(Answer):
    protocol: SenderProtocol
    name: str
    address: str
    first_seen_at: UnixTime
    last_seen_at: UnixTime
    items: int
    gateway_test: bool = Field(description="The gateway's own check (doctor, self-test), not a clinic device.")


class TestResult(Answer):
    ok: bool
    message: str
    seconds: float | None
    control_id: str | None = Field(default=None, description="The test message's MSH-10 (HL7 test).")


# -- worklist -----------------------------------------------------------------------------------

class WorklistRecord(Answer):
    order_id: str
    state: Literal["scheduled", "in_progress", "performed", "cancelled"]
    created_at: UnixTime
    updated_at: UnixTime
    performed_at: UnixTime | None
    expires_at: UnixTime
    linked_items: int = Field(description="Instances received for this order.")
    procedure_step: str | None = Field(description="The last MPPS status a modality reported.")
    entry: WorklistEntry


class Cancelled(Answer):
    order_id: str
    state: Literal["cancelled"]


# -- settings -----------------------------------------------------------------------------------

class SettingsShown(Answer):
    settings: Settings = Field(description="The configuration the gateway runs with now.")
    file: str | None = Field(description="The configuration file it started with (null: the embedded defaults).")
    remote_file: str = Field(description="Where remote changes are kept, laid over the file at every start.")
    remote: dict[str, Any] = Field(description="What that file holds.")
    version: str = Field(description="Send it back with a change: a change made in between is then refused (409).")
    changeable: list[str] = Field(description="The keys (or sections) that may change remotely.")
    restart_needed: list[str] = Field(description="Keys changed since the start that take effect at the next one.")


class SettingsChanged(Answer):
    changed: list[str]
    restart_needed: list[str] = Field(description="Of those, the ones that take effect at the next start.")
    version: str
