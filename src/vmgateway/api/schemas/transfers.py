"""Transfers: push destinations, the queue by kind, dead items, the switch.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Literal

from pydantic import Field

from vmgateway.api.schemas.base import Answer, UnixTime


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
