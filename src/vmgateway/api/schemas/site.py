"""The site, its PACS and what polling it found, the devices seen, the tests.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Literal

from pydantic import Field

from vmgateway.api.schemas.base import Answer, UnixTime
from vmgateway.config import PacsConfig, SiteConfig
from vmgateway.model import SenderProtocol


class Site(Answer):
    site: SiteConfig
    pacs: PacsConfig


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
