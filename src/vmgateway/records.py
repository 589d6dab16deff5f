"""What the store answers with: every read of the journal comes back as one of these records.

They are frozen dataclasses that import only `model`, so a reader (the API, the push sinks, the
lab senders, the command line) learns the shape of what was kept from its type, and none of them
depends on how the store keeps it. Only the API turns them into JSON (`vmgateway.api.schemas`,
field for field: a record's field names are the API's), so the store no longer builds answers
for one reader that another must pick apart again. Times are Unix times in seconds, as the
journal keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

from vmgateway.model import ItemKind, SenderProtocol

ItemState = Literal["received", "delivered", "dead"]
"""An item's life: received → delivered, or → dead (kept, listed, retryable)."""


# -- items ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DicomFields:
    """What the journal keeps of a DICOM instance beside its file."""

    sop_instance_uid: str
    version: int
    """1, 2, … for each different content sent under one SOP Instance UID."""
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
    order_id: str | None
    """The worklist order the instance belongs to, when linked."""
    patient_id: str | None
    patient_name: str | None


@dataclass(frozen=True, slots=True)
class Hl7Fields:
    """What the journal keeps of an HL7 message beside its bytes (MSH before the ACK, the rest after)."""

    sending_application: str
    sending_facility: str
    message_type: str
    control_id: str
    """MSH-10."""
    processing_id: str
    version: str
    charset: str
    """MSH-18 as declared."""
    charset_used: str | None
    """The character set the message was read in (None until its full parse)."""
    placer_order_number: str | None
    filler_order_number: str | None
    observation_count: int | None
    patient_id: str | None
    patient_name: str | None


@dataclass(frozen=True, slots=True)
class AstmFields:
    """What the journal keeps of an ASTM message beside its bytes."""

    listener: str
    instrument: str
    sample_ids: str
    patient_ids: str
    test_codes: str
    result_count: int


@dataclass(frozen=True, slots=True)
class LabLink:
    """The lab order a result answers."""

    order_id: str


@dataclass(frozen=True, slots=True)
class Item:
    """One thing received: a DICOM instance, an HL7 or an ASTM message, with the fields of its kind."""

    id: int
    kind: ItemKind
    state: ItemState
    received_at: float
    sender: str
    """Calling AE title, MSH-3^MSH-4, or the ASTM instrument."""
    peer_address: str
    size: int
    sha256: str
    delivered_at: float | None
    dicom: DicomFields | None = None
    hl7: Hl7Fields | None = None
    astm: AstmFields | None = None
    lab: LabLink | None = None


@dataclass(frozen=True, slots=True)
class KindTotals:
    items: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ItemCounts:
    """Items and bytes in all, by kind and by state: the one count behind status, metrics and the CLI."""

    items: int
    bytes: int
    by_kind: dict[str, KindTotals]
    by_state: dict[str, int]
    undelivered: int
    last_received_at: float | None


@dataclass(frozen=True, slots=True)
class Due:
    """An item ready to be pushed, with what a sink needs to send it."""

    item_id: int
    kind: ItemKind
    path: Path | None
    """The spool file (DICOM), or None: the bytes are in the journal (HL7, ASTM) or were removed."""
    size: int
    sha256: str
    received_at: float
    attempts: int
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    order_id: str | None = None
    """Vetmanager's order, when the instance was linked to a worklist entry."""
    hl7: Hl7Fields | None = None
    """An HL7 message's header fields (what a message sink puts in its request's headers)."""
    astm: AstmFields | None = None


# -- studies, events, senders ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StudyInstance:
    item_id: int
    sop_instance_uid: str
    version: int
    series_instance_uid: str | None


@dataclass(frozen=True, slots=True)
class Study:
    study_instance_uid: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None
    modalities: str
    instance_count: int
    first_received_at: float
    last_received_at: float
    completed_at: float | None
    instances: list[StudyInstance] = field(default_factory=list)
    """Its instances' items, oldest first (empty where only the study is summarised)."""


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class SenderSeen:
    """A device the gateway heard from (or fetched from), and how often."""

    protocol: SenderProtocol
    name: str
    address: str
    first_seen_at: float
    last_seen_at: float
    items: int
    gateway_test: bool
    """The gateway's own check (doctor, self-test), not one of the clinic's devices."""


@dataclass(frozen=True, slots=True)
class StudySummary:
    """A study as `vmgateway status` lists it: its instances counted, not named."""

    study_instance_uid: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None
    modalities: str
    instances: int
    first_received_at: float
    last_received_at: float


@dataclass(frozen=True, slots=True)
class StudiesSummary:
    complete: int
    arriving: list[StudySummary]
    recently_complete: list[StudySummary]


@dataclass(frozen=True, slots=True)
class ReceivedTotals:
    items: int
    bytes: int
    by_state: dict[str, int]
    by_kind: dict[str, KindTotals]


@dataclass(frozen=True, slots=True)
class ReceivedToday:
    items: int
    bytes: int
    by_kind: dict[str, int]


@dataclass(frozen=True, slots=True)
class ReceivedSummary:
    """What `vmgateway status` shows, read from the journal by its path beside a running gateway."""

    journal: str
    generated_at: float
    totals: ReceivedTotals
    today: ReceivedToday
    studies: StudiesSummary
    senders: list[SenderSeen]
    events: list[Event]
    """The last five, newest first."""


# -- transfers ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeadItem:
    id: int
    kind: ItemKind
    received_at: float
    sender: str
    size: int
    attempts: int
    last_error: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    control_id: str | None
    sending_application: str | None


@dataclass(frozen=True, slots=True)
class KindQueue:
    """Items of one kind waiting to be delivered (and since when the oldest), and dead."""

    waiting: int = 0
    dead: int = 0
    oldest_waiting_at: float | None = None


@dataclass(frozen=True, slots=True)
class TransfersReport:
    """Whether transfers are on, items waiting (and since when the oldest), items dead."""

    active: bool
    commissioned: bool
    waiting: int
    dead: int
    oldest_waiting_at: float | None


# -- worklist and lab orders ------------------------------------------------------------------

WorklistState = Literal["scheduled", "in_progress", "performed", "cancelled"]


@dataclass(frozen=True, slots=True)
class WorklistRecord:
    order_id: str
    state: WorklistState
    created_at: float
    updated_at: float
    performed_at: float | None
    expires_at: float
    linked_items: int
    """Instances received for this order."""
    procedure_step: str | None
    """The last MPPS status a modality reported."""
    entry: str
    """The entry as Vetmanager sent it (JSON, as kept; `vmgateway.worklist.entry` reads it)."""


LabMessageState = Literal["queued", "sent", "acknowledged", "failed", "dead"]
LabOrderState = Literal["queued", "sent", "acknowledged", "failed", "dead", "resulted"]
Control = Literal["NW", "CA", "XO"]
"""ORC-1: a new order, its cancellation, a change to it."""


@dataclass(frozen=True, slots=True)
class LabMessage:
    """One message that went (or goes) to an instrument for an order."""

    control: Control
    control_id: str
    state: LabMessageState
    attempts: int
    last_error: str | None
    answer: str | None
    created_at: float
    answered_at: float | None


@dataclass(frozen=True, slots=True)
class LabOrderRecord:
    order_id: str
    instrument: str
    state: LabOrderState
    cancelled: bool
    last_answer: str | None
    created_at: float
    updated_at: float
    order: str
    """The order as Vetmanager sent it (JSON, as kept; `vmgateway.lab.orders` reads it)."""
    messages: list[LabMessage]


class LabRefusal(Enum):
    """Why a change or a cancellation of a lab order was not queued."""

    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    """Nothing follows a cancellation."""
    OTHER_INSTRUMENT = "instrument"
    """A change may not move an order to another instrument."""


@dataclass(frozen=True, slots=True)
class LabQueue:
    """An instrument's messages: waiting, failed, dead; its last answer."""

    waiting: int = 0
    failed: int = 0
    dead: int = 0
    last_answer: str | None = None
    last_answer_at: float | None = None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """The next message for an instrument, as it goes out (the same MSH-10 on every resend)."""

    id: int
    order_id: str
    control: str
    control_id: str
    message: bytes
    attempts: int
    next_attempt_at: float


# -- tokens, the journal, the start -------------------------------------------------------------

Scope = Literal["all", "monitoring"]
SCOPES: tuple[Scope, ...] = ("all", "monitoring")
"""What a token may do: everything, or read status and metrics only (the token a fleet's
Prometheus shares across every box: one leaked box's copy must not switch transfers anywhere)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None
    scope: Scope


@dataclass(frozen=True, slots=True)
class Holder:
    """Whoever presented a valid token: its name (for the audit trail) and what it may do."""

    name: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class JournalState:
    """`failing` (with the error and since when) while the journal's commits fail: nothing is
    acknowledged then; `ok` once one succeeds again."""

    state: Literal["ok", "failing"]
    last_error: str | None
    failing_since: float | None


_LISTED = 20
"""Missing files named in a start-up check's report; the rest are counted."""


@dataclass(frozen=True)
class StartupCheck:
    """What the store found at start-up, after a clean stop or a crash."""

    clean_stop: bool
    """The previous run recorded its stop (or there was none)."""
    partial_files: int
    """Files of transfers cut off mid-way, removed (never acknowledged)."""
    unrecorded_files: int
    """Complete files whose journal commit never happened, removed (never acknowledged)."""
    missing_files: list[tuple[int, str]]
    """(item id, spool path) of recorded items whose file is gone: acknowledged data lost."""

    @property
    def anything_found(self) -> bool:
        return bool(self.partial_files or self.unrecorded_files or self.missing_files)

    def describe(self) -> str:
        found = [
            "the previous run did not stop cleanly" if not self.clean_stop else "the previous run stopped cleanly",
            f"{self.partial_files} partial and {self.unrecorded_files} unrecorded file(s) removed"
            " (never acknowledged: their senders kept them)",
        ]
        if not self.clean_stop:
            found.append(f"{len(self.missing_files)} recorded item(s) without their file")
        if self.missing_files:
            listed = ", ".join(f"item {item_id} ({path})" for item_id, path in self.missing_files[:_LISTED])
            more = len(self.missing_files) - _LISTED
            found.append(f"missing: {listed}" + (f" and {more} more" if more > 0 else ""))
        return "; ".join(found)
