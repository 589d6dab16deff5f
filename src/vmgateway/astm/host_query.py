"""E1394 host query, without I/O: an analyzer asks for the orders of a sample (a Q record), the
gateway answers with what Vetmanager ordered for it (H, P, O, L), or "no information" (L-3 `I`).

The sample id an analyzer asks about is the order id Vetmanager printed on the tube's label
(Q-3, the starting range ID: its second component, the specimen ID, or the first when there is
only one), as the result's O-3 later carries it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vmgateway.astm.records import Delimiters, delimiters_of
from vmgateway.lab.order import LabOrder

MAX_SAMPLES_ANSWERED = 50
"""Samples looked up per query message (an analyzer asks for a rack: tens). The rest of a larger
query are answered as unknown: one message of 300,000 Q records once took the gateway to 1.4 GB
and its final frame 49 s to be acknowledged (E1381 allows 15 s)."""

_LINE = re.compile(rb"[^\r\n]+")


@dataclass(frozen=True)
class HostQuery:
    samples: list[str]
    """The sample ids to look up, in the query's order: at most MAX_SAMPLES_ANSWERED."""
    queried: int
    """How many sample ids the message asked about."""


def _records(raw: bytes) -> Iterator[tuple[str, list[str], Delimiters]]:
    """Each record's type and fields, one at a time: a query is read without holding all of its
    records at once. The type as parse() reads it (a sequence digit before it is dropped)."""
    delimiters = Delimiters()
    for number, match in enumerate(_LINE.finditer(raw)):
        line = match.group().decode("latin-1")
        if not line.strip():
            continue
        if number == 0:
            delimiters = delimiters_of(line)
        fields = line.split(delimiters.field)
        yield fields[0].strip()[-1:].upper(), fields, delimiters


def read_query(raw: bytes) -> HostQuery | None:
    """The samples a message asks about (every repetition of each Q-3: the specimen ID, or the
    first component when there is only one); None when the message is no query (no Q record, or
    results in it)."""
    samples: list[str] = []
    queried = 0
    queries = False
    for kind, fields, d in _records(raw):
        if kind == "R":
            return None
        if kind != "Q":
            continue
        queries = True
        for wanted in (fields[2] if len(fields) > 2 else "").split(d.repeat):
            parts = [part.strip() for part in wanted.split(d.component)]
            sample = (parts[1] if len(parts) > 1 else "") or parts[0]
            if sample:
                queried += 1
                if len(samples) < MAX_SAMPLES_ANSWERED:
                    samples.append(sample)
    return HostQuery(samples, queried) if queries else None


def answer_records(found: list[tuple[str, LabOrder | None]], at: str) -> list[bytes]:
    """H, then for each sample with a pending order its P and O records, then L: `N` when something
    was found, `I` (no information available from the last query) when nothing was."""
    records = [f"H|\\^&|||VMGATEWAY|||||||P|LIS2-A2|{at}"]
    number = 0
    for sample, order in found:
        if order is None:
            continue
        number += 1
        animal, owner = order.animal, order.owner
        birth = animal.birth_date.strftime("%Y%m%d") if animal.birth_date else ""
        tests = "\\".join(f"^^^{test.code}" for test in order.tests)
        records.append(f"P|{number}||{animal.patient_id}||{owner.family_name}^{animal.name}||{birth}|{animal.sex}")
        records.append(f"O|1|{sample}||{tests}|{'S' if order.priority == 'stat' else 'R'}||||||N")
    records.append(f"L|1|{'N' if number else 'I'}")
    return [record.encode("latin-1", errors="replace") for record in records]
