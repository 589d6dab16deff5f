"""An ASTM result message offered as the equivalent HL7 v2.5 ORU^R01, for Vetmanager's convenience
(the raw original stays the item's content).

Mapping (E1394 field numbers, 1-based; HL7 v2.5):

    H-5 sender name      → MSH-3 sending application (MSH-10 is ASTM<item id>, MSH-11 P)
    P-3 practice pat. ID → PID-3 (identifier type PI), P-4 laboratory patient ID → a second PID-3
    P-6 patient name     → PID-5, P-8 birth date → PID-7, P-9 sex → PID-8
    O-3 specimen ID      → OBR-2 placer order number, O-4 instrument specimen ID → OBR-3
    O-5 universal test ID (^^^code) → OBR-4, O-7 requested date/time → OBR-7
    R-3 universal test ID → OBX-3, R-4 value → OBX-5 (OBX-2 NM when numeric, else ST), R-5 units
      → OBX-6, R-6 reference ranges → OBX-7, R-7 abnormal flags → OBX-8, R-9 result status →
      OBX-11 (F, P, C; anything else F), R-13 date/time completed → OBX-14
    C-4 comment text     → NTE-3 (after the segment it follows), C-3 comment source → NTE-2

Components keep their order (ASTM `^^^GLU` becomes HL7 `^^^GLU`); text that holds one of HL7's
delimiters is escaped (\\F\\, \\S\\, \\R\\, \\E\\, \\T\\).
"""

from __future__ import annotations

import re
import time

from vmgateway.astm.records import AstmMessage, Record

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def _field(record: Record, number: int, message: AstmMessage) -> str:
    """A field with its components (first repetition), escaped for HL7 and joined with ^."""
    d = message.delimiters
    if number - 1 >= len(record.fields):
        return ""
    value = record.fields[number - 1].split(d.repeat)[0]
    return "^".join(_escape(part) for part in value.split(d.component)).rstrip("^")


def to_oru(message: AstmMessage, item_id: int, facility: str = "") -> str:
    """The ORU^R01, segments separated by CR."""
    d = message.delimiters
    header = message.first("H")
    sender = header.get(5, 1, d) if header else ""
    stamp = (header.get(14, 1, d) if header else "") or time.strftime("%Y%m%d%H%M%S")
    segments = [f"MSH|^~\\&|{_escape(sender) or 'ASTM'}|{_escape(facility)}|VETMANAGER|VETMANAGER|{stamp}||"
                f"ORU^R01^ORU_R01|ASTM{item_id}|P|2.5|||||||UNICODE UTF-8"]
    counts = {"PID": 0, "OBR": 0, "OBX": 0, "NTE": 0}
    for record in message.records:
        if record.type == "P":
            counts["PID"] += 1
            ids = [f"{value}^^^^PI" for value in (_field(record, 3, message), _field(record, 4, message)) if value]
            segments.append(f"PID|{counts['PID']}||{'~'.join(ids)}||{_field(record, 6, message)}||"
                            f"{_field(record, 8, message)}|{_field(record, 9, message)}")
        elif record.type == "O":
            counts["OBR"] += 1
            counts["OBX"] = 0
            segments.append(f"OBR|{counts['OBR']}|{_field(record, 3, message)}|{_field(record, 4, message)}|"
                            f"{_field(record, 5, message)}|||{_field(record, 7, message)}")
        elif record.type == "R":
            counts["OBX"] += 1
            value = _field(record, 4, message)
            kind = "NM" if _NUMBER.match(value) else "ST"
            status = record.get(9, 1, d) if record.get(9, 1, d) in ("F", "P", "C") else "F"
            segments.append(f"OBX|{counts['OBX']}|{kind}|{_field(record, 3, message)}||{value}|"
                            f"{_field(record, 5, message)}|{_field(record, 6, message)}|{_field(record, 7, message)}"
                            f"|||{status}|||{_field(record, 13, message)}")
        elif record.type == "C":
            counts["NTE"] += 1
            segments.append(f"NTE|{counts['NTE']}|{_field(record, 3, message)}|{_field(record, 4, message)}")
    return "\r".join(segments) + "\r"
