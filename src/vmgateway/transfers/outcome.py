"""What a sink reports for one request, and how HTTP answers map onto it."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field

import httpx

TRANSIENT_STATUSES = frozenset({408, 429})
"""Besides 5xx: "try again later", not "this item is wrong"."""
DESTINATION_STATUSES = frozenset({401, 403, 404, 405, 407})
"""Answers about the destination (credentials, URL), not about the items: waited out like an
outage and shown in status, rather than counted against every item until all are dead."""


@dataclass
class Outcome:
    """Per item: delivered or refused (with why); or the whole request failed (`unreachable`)."""

    delivered: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    unreachable: str | None = None
    retry_after_s: float | None = None
    split: bool = False
    """The upstream refused the batch as a whole without saying which item: send them one by one."""


def is_transient(status: int) -> bool:
    """Whether an answer says nothing against the items: retry later, do not count it."""
    return status >= 500 or status in TRANSIENT_STATUSES or status in DESTINATION_STATUSES


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), when given and sensible."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe_failure(exc: Exception) -> str:
    """One line for a request that got no usable answer (secrets never appear: no headers)."""
    name = exc.__class__.__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def http_problem(response: httpx.Response) -> str:
    body = response.text.strip().replace("\n", " ")[:200] if response.content else ""
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {body}" if body else "")
