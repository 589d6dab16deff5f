"""C-FIND matching of a worklist query against a worklist item (PS3.4 C.2.2.2), and the answer.

Per key of the query: an empty value matches anything (universal matching); `*` and `?` are
wildcards; a DA or TM value with `-` is a range (open at either end); anything else must be
equal. Person names compare case-insensitively — PS3.4 C.2.2.2.1 leaves that to the SCP, and a
nurse typing "fido" at the console means Fido. A sequence in the query matches when one item of
the entry's sequence matches its (first) item. The answer holds exactly the keys asked for, with
sequences nested the same way, plus Specific Character Set.
"""

from __future__ import annotations

import re

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

ALWAYS = ("SpecificCharacterSet",)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _wildcard(pattern: str, value: str, ignore_case: bool) -> bool:
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(expression, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _in_range(query: str, value: str) -> bool:
    low, _, high = query.partition("-")
    if not value:
        return False
    width = max(len(low), len(high))  # compare dates with dates, HHMM with the value's first digits
    value = value[:width] if width else value
    return (not low or value >= low[:len(value)]) and (not high or value <= high[:len(value)])


def _element_matches(query: DataElement, entry: Dataset) -> bool:
    if query.VR == "SQ":
        wanted = query.value[0] if query.value else None
        if wanted is None or len(wanted) == 0:
            return True
        return any(matches(wanted, item) for item in entry.get(query.keyword, []) or [])
    pattern = _text(query.value)
    if not pattern:
        return True
    value = _text(entry[query.tag].value) if query.tag in entry else ""
    if query.VR in ("DA", "TM", "DT") and "-" in pattern:
        return _in_range(pattern, value)
    is_name = query.VR == "PN"
    if ("*" in pattern or "?" in pattern) and query.VR not in ("UI", "DA", "TM", "DT"):
        return _wildcard(pattern, value, ignore_case=is_name)
    return value.casefold() == pattern.casefold() if is_name else value == pattern


def matches(query: Dataset, entry: Dataset) -> bool:
    return all(_element_matches(element, entry) for element in query
               if element.keyword not in ALWAYS and element.tag.element != 0)


def _pick(query: Dataset, entry: Dataset) -> Dataset:
    picked = Dataset()
    for element in query:
        if element.keyword in ALWAYS or element.tag.element == 0:
            continue
        if element.VR == "SQ":
            wanted = element.value[0] if element.value else None
            items = list(entry.get(element.keyword, []) or [])
            if wanted is not None and len(wanted):
                items = [_pick(wanted, item) for item in items if matches(wanted, item)]
            picked[element.tag] = DataElement(element.tag, "SQ", items)
        elif element.tag in entry:
            picked[element.tag] = entry[element.tag]
        else:
            picked[element.tag] = DataElement(element.tag, element.VR, None)
    return picked


def answer(query: Dataset, entry: Dataset) -> Dataset:
    """The entry's values for exactly the query's keys (missing ones empty), in its character set."""
    picked = _pick(query, entry)
    picked.SpecificCharacterSet = entry.SpecificCharacterSet
    return picked
