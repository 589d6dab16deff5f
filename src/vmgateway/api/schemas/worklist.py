"""Worklist entries as the API shows them.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Annotated, Literal

from pydantic import Field

from vmgateway.api.schemas.base import Answer, UnixTime, kept_as_json
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
    entry: Annotated[WorklistEntry, kept_as_json(entry_from_json)]


class Cancelled(Answer):
    order_id: str
    state: Literal["cancelled"]
