"""E1394 (LIS2-A2) records: H, P, O, R, C, Q, M, L, with the delimiters the H record declares.

Lenient, as python-hl7 is: a record is split into fields and components, nothing is checked
beyond what the metadata needs. `H|\\^&|||…`: after the record type come the field delimiter,
then (in field 2) the repeat, component and escape delimiters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmgateway.model import AstmSummary

ASTM_MEDIA_TYPE = "application/octet-stream"
"""Over HTTP: E1394 names no character set; its records are bytes as the instrument sent them."""


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"


@dataclass
class Record:
    type: str
    fields: list[str]
    """fields[0] is the record type; fields[n] is field n as the standard numbers them (1-based)."""

    def get(self, number: int, component: int = 1, delimiters: Delimiters = Delimiters()) -> str:
        """Field `number`, component `component` (1-based), first repetition; '' when absent."""
        if number - 1 >= len(self.fields) or number < 1:
            return ""
        value = self.fields[number - 1].split(delimiters.repeat)[0]
        parts = value.split(delimiters.component)
        return parts[component - 1].strip() if component - 1 < len(parts) else ""


@dataclass
class AstmMessage:
    delimiters: Delimiters
    records: list[Record]
    sample_results: list[tuple[str, list[Record]]] = field(default_factory=list)
    """Per order (O) record: its specimen ID and the R records under it, as the instrument sent them."""

    def first(self, record_type: str) -> Record | None:
        return next((r for r in self.records if r.type == record_type), None)


def delimiters_of(header: str) -> Delimiters:
    """From `H|\\^&…`: the field delimiter follows H; field 2 holds repeat, component, escape."""
    if len(header) < 5 or header[0] != "H":
        return Delimiters()
    field_delimiter = header[1]
    declared = header[2:].split(field_delimiter, 1)[0]
    if len(declared) < 3:
        return Delimiters(field=field_delimiter)
    return Delimiters(field_delimiter, declared[0], declared[1], declared[2])


def parse(raw: bytes, encoding: str = "latin-1") -> AstmMessage:
    """Records from a message as E1381 delivered it (records separated by CR)."""
    text = raw.decode(encoding, errors="replace")
    lines = [line for line in text.replace("\n", "\r").split("\r") if line.strip()]
    delimiters = delimiters_of(lines[0]) if lines else Delimiters()
    records = []
    for line in lines:
        parts = line.split(delimiters.field)
        # strip a sequence digit some senders put before the record type ("1H|…" is not E1394 but seen)
        records.append(Record(parts[0].strip()[-1:].upper() if parts[0].strip() else "", parts))
    message = AstmMessage(delimiters, records)
    current: tuple[str, list[Record]] | None = None
    for record in records:
        if record.type == "O":
            current = (record.get(3, 1, delimiters) or record.get(4, 1, delimiters), [])
            message.sample_results.append(current)
        elif record.type == "R" and current is not None:
            current[1].append(record)
    return message


def summarise(message: AstmMessage) -> AstmSummary:
    d = message.delimiters
    header = message.first("H")
    instrument = header.get(5, 1, d) if header else ""
    if header and header.get(5, 2, d):
        instrument = f"{instrument} {header.get(5, 2, d)}".strip()
    patients = [r.get(3, 1, d) or r.get(4, 1, d) for r in message.records if r.type == "P"]
    results = [r for r in message.records if r.type == "R"]
    codes = [r.get(3, 4, d) or r.get(3, 1, d) for r in results]
    return AstmSummary(
        instrument=instrument,
        sample_ids=" ".join(sample for sample, _ in message.sample_results if sample),
        patient_ids=" ".join(p for p in patients if p),
        test_codes=" ".join(dict.fromkeys(c for c in codes if c)),
        result_count=len(results),
    )
