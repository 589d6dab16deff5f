"""JSON bodies the API can answer about. JSON (RFC 8259) has no NaN or Infinity, and its strings
hold characters, never a lone surrogate; Python's json module reads all of them, and the API then
failed as a 500 on each — validating such a value, or echoing it in the 422 that refused it. So a
body that holds one is refused first, with where it is and what it is.
(Measured by sending each of them to every route: 165 answers were 500s before this.)
"""

from __future__ import annotations

import json
import math
from typing import Any

from vmgateway.charsets import LONE_SURROGATE

Location = list[str | int]


class _Unsayable(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _Unsayable(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Unsayable(f"{text[:40]} is too large for a number")
    return number


def _find(value: object, where: Location) -> Location | None:
    """Where the first string holding a lone surrogate is (a key counts as its value's place)."""
    if isinstance(value, str):
        return where if LONE_SURROGATE.search(value) is not None else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, [*where, index])
            if found is not None:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            if LONE_SURROGATE.search(key):
                return [*where, key.encode("utf-8", "replace").decode()]
            found = _find(item, [*where, key])
            if found is not None:
                return found
    return None


def unsayable(body: bytes) -> tuple[Location, str] | None:
    """Where in the JSON `body` a value is that JSON cannot carry, and why; None when there is none,
    or when the body is no JSON at all (the route's own validation says so)."""
    try:
        document = json.loads(body, parse_constant=_constant, parse_float=_finite)
    except _Unsayable as exc:
        return [], str(exc)
    except ValueError:
        return None
    found = _find(document, [])
    return None if found is None else (found, "a lone surrogate is not a character")
