"""Worklist entries as the API shows them.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Literal

from pydantic import Field, field_validator

from vmgateway.api.schemas.base import Answer, UnixTime
from vmgateway.worklist.entry import WorklistEntry, entry_from_json


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

    @field_validator("entry", mode="before")
    @classmethod
    def _kept(cls, entry: object) -> object:
        """A record holds the entry as the journal keeps it."""
        return entry_from_json(entry) if isinstance(entry, str) else entry


class Cancelled(Answer):
    order_id: str
    state: Literal["cancelled"]
