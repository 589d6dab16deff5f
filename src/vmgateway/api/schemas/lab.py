"""Lab orders, the messages that carry them, and each instrument's queue.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Annotated, Literal

from pydantic import Field

from vmgateway.api.schemas.base import Answer, UnixTime, kept_as_json
from vmgateway.lab.order import LabOrder
from vmgateway.lab.orders import order_from_json
from vmgateway.records import LabMessageState, LabOrderState


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
    state: LabOrderState = Field(description="Its latest message's: queued → sent → acknowledged, or failed (the"
                                        " instrument refused it), or dead (no answer after lab.max_attempts);"
                                        " resulted once a result for it arrived.")
    cancelled: bool
    last_answer: str | None
    created_at: UnixTime
    updated_at: UnixTime
    order: Annotated[LabOrder, kept_as_json(order_from_json)]
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
