"""The gateway as a whole: health, the overall state, every component, identity, events.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Literal

from pydantic import ConfigDict, Field

from vmgateway.api.schemas.base import Answer, UnixTime
from vmgateway.api.schemas.lab import LabInstrumentState
from vmgateway.api.schemas.site import Pacs
from vmgateway.api.schemas.transfers import TransfersSummary


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
