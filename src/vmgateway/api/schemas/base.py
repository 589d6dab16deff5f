"""What every answer shares: closed fields, read from the store's records, and the error answers."""

from collections.abc import Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict

UnixTime = float
"""Seconds since 1970-01-01 UTC."""


class Answer(BaseModel):
    """Closed (`extra="forbid"`), and read from a record's attributes as well as from a mapping:
    a route may answer with what the store returned (`vmgateway.records`), field for field."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


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


def kept_as_json(read: Callable[[str], object]) -> BeforeValidator:
    """For a field a record holds as the JSON the journal keeps (a lab order, a worklist entry):
    `read` makes it the model it was (its module's one JSON conversion)."""
    return BeforeValidator(lambda value: read(value) if isinstance(value, str) else value)
