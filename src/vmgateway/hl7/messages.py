"""HL7 v2 messages: the MSH read fast for the ACK, a few fields read after it, the ACK itself.

The raw bytes are what the store keeps; what is read here is only metadata: the MSH (for the
ACK and duplicate detection), PID-3, PID-5, OBR-2, OBR-3 and the number of OBX segments.
Those are plain splits by the message's own separators, with any segment terminator (CR, LF,
CR LF) accepted. A library parse was measured first: hl7apy validates against the standard's
tables, refuses much of what analyzers send and is ~25× slower than python-hl7; python-hl7 is
lenient but still builds every field, component and repetition of a segment — 160 µs for
MSH+PID+OBR of a 600-byte message, which halved throughput at 10 connections (4650 → 2350
messages/s on 2 cores) for five fields a split yields in a few µs. Neither library unescapes
values by default, so nothing is lost against them. (python-hl7 remains the independent
client in the tests — its `mllp_send` — and the baseline in bench/.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from itertools import count

from vmgateway.charsets import FALLBACK_CHARSET, codec_for
from vmgateway.model import Hl7Details, Hl7Message

ENHANCED_ACK_TYPES = {"AL", "NE", "ER", "SU"}
_SEGMENT_END = re.compile(rb"\r\n|\n|\r")
_HEADER_SCAN = 65536
"""The MSH is looked for in this much of the message's beginning."""


class UnusableHeader(Exception):
    """The frame has no MSH we can answer: not HL7, cut short, or odd encoding characters."""


@dataclass(frozen=True, slots=True)
class Header(Hl7Message):
    """The MSH as the journal keeps it, plus the separators the ACK is written with."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 asks for accept (commit) acknowledgements: answer CA/CE/CR, not AA/AE/AR."""
        return self.accept_ack_type in ENHANCED_ACK_TYPES


def read_header(raw: bytes | bytearray) -> Header:
    """Read the MSH of a message; raise UnusableHeader saying why it cannot be answered."""
    start = bytes(raw[:_HEADER_SCAN]).lstrip(b"\r\n\x00 \t")  # never copies a whole large message
    if not start.startswith(b"MSH"):
        raise UnusableHeader("the message does not start with an MSH segment")
    if len(start) < 8:
        raise UnusableHeader("the MSH segment is cut short")
    segment = _SEGMENT_END.split(start, maxsplit=1)[0].decode("latin-1")
    separator = segment[3]
    fields = segment.split(separator)
    encoding = fields[1] if len(fields) > 1 else ""
    if separator.isalnum() or not 2 <= len(encoding) <= 5 or any(c.isalnum() or c == separator for c in encoding):
        raise UnusableHeader(f"unsupported field separator or encoding characters {segment[3:8]!r}")
    if len(fields) < 12:
        raise UnusableHeader("the MSH segment is cut short (it needs at least MSH-12, the version)")

    def field(number: int) -> str:  # MSH-1 is the separator itself, so MSH-n is fields[n - 1]
        return fields[number - 1].strip() if len(fields) >= number else ""

    component = encoding[0]
    message_type = field(9).split(component)
    charset = field(18).split(encoding[1] if len(encoding) > 1 else "~")[0]

    def named(number: int) -> str:
        """A name field in the charset MSH-18 declares (the segment was read as Latin-1, byte for
        byte, before MSH-18 was known): "Djurkliniken Årsta", not "Djurkliniken Ã\x85rsta"."""
        text = field(number)
        if not charset or text.isascii():
            return text
        return text.encode("latin-1").decode(codec_for(charset), errors="replace")

    return Header(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=named(3),
        sending_facility=named(4),
        receiving_application=named(5),
        receiving_facility=named(6),
        message_type=component.join(message_type[:2]),
        trigger_event=message_type[1] if len(message_type) > 1 else "",
        control_id=field(10),
        processing_id=field(11),
        version=field(12),
        accept_ack_type=field(15),
        application_ack_type=field(16),
        charset=charset,
    )


def decode(raw: bytes | bytearray, charset: str) -> tuple[str, str]:
    """The text of `raw` and the charset it was decoded with (ISO-8859-1 when it does not fit)."""
    try:
        return raw.decode(codec_for(charset or FALLBACK_CHARSET)), charset or FALLBACK_CHARSET
    except UnicodeDecodeError:
        return raw.decode("latin-1"), FALLBACK_CHARSET


def read_details(raw: bytes | bytearray, header: Header, charset_override: str | None = None) -> Hl7Details:
    """Patient, orders and observation count: a few fields of the first PID and OBR, and a
    count of OBX segments. A 16 MB message (a base64 PDF in an OBX) costs a scan, not 16 MB
    of parsed objects."""
    fs, enc = header.field_separator, header.encoding_characters
    pid, obr = _first_segment(raw, b"PID"), _first_segment(raw, b"OBR")
    text, used = decode(pid + b"\r" + obr, charset_override or header.charset)
    pid_fields, obr_fields = (segment.split(fs) for segment in text.split("\r"))

    def field(fields: list[str], number: int, whole: bool = False) -> str | None:
        if len(fields) <= number:
            return None
        value = fields[number] if whole else fields[number].split(enc[1])[0].split(enc[0])[0]
        return value.strip() or None

    return Hl7Details(
        charset_used=used,
        patient_id=field(pid_fields, 3),
        patient_name=field(pid_fields, 5, whole=True),
        placer_order_number=field(obr_fields, 2),
        filler_order_number=field(obr_fields, 3),
        observation_count=len(re.findall(rb"(?:^|[\r\n])OBX" + re.escape(fs.encode()), raw)),
    )


def _first_segment(raw: bytes | bytearray, segment_id: bytes) -> bytes:
    """The first segment with this ID, whatever its terminator (CR, LF or CR LF); b"" if none."""
    found = re.search(rb"(?:^[\r\n\x00 \t]*|[\r\n])(" + segment_id + rb"[^\r\n]*)", raw)
    return bytes(found.group(1)) if found else b""


_ack_numbers = count(1)


def build_ack(header: Header | None, code: str, text: str = "", error_code: str = "") -> bytes:
    """An ACK for `header` (or, with no usable header, a generic AR in HL7's defaults).

    MSH swaps sender and receiver, mirrors the version and charset, uses the sender's
    separators; MSA-2 echoes MSH-10. `error_code` (HL7 table 0357) adds an ERR segment.
    """
    now = datetime.now().strftime("%Y%m%d%H%M%S")
    control_id = f"VMG{now}{next(_ack_numbers):06d}"
    if header is None:
        fs, enc = "|", "^~\\&"
        msh = ["MSH", enc, "VM_GATEWAY", "", "", "", now, "", "ACK", control_id, "P", "2.5"]
        codec = "latin-1"
        received_id = ""
    else:
        fs, enc = header.field_separator, header.encoding_characters
        msh = [
            "MSH", enc, header.receiving_application, header.receiving_facility, header.sending_application,
            header.sending_facility, now, "", f"ACK{enc[0]}{header.trigger_event}{enc[0]}ACK", control_id,
            header.processing_id or "P", header.version,
        ]
        if header.charset:
            msh += ["", "", "", "", "", header.charset]
        codec = codec_for(header.charset or FALLBACK_CHARSET)
        received_id = header.control_id
    segments = [fs.join(msh), fs.join(["MSA", code, received_id, _escape(text, fs, enc)])]
    if error_code:
        segments.append(fs.join(["ERR", "", "", f"{error_code}{enc[0]}{_escape(text, fs, enc)}{enc[0]}HL70357", "E"]))
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


def _escape(text: str, fs: str, enc: str) -> str:
    """Keep free text from breaking the ACK's structure (HL7 escape sequences)."""
    escape = enc[2] if len(enc) > 2 else "\\"
    out = text.replace(escape, f"{escape}E{escape}").replace(fs, f"{escape}F{escape}")
    for character, code in zip(enc[:2] + enc[3:4], "SRT", strict=False):
        out = out.replace(character, f"{escape}{code}{escape}")
    return out.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True, slots=True)
class AckSummary:
    """An ACK as a sender reads it."""

    code: str
    """MSA-1: AA/AE/AR (or CA/CE/CR), empty when no MSA was found."""
    text: str
    """MSA-3, the sender's error text if any."""
    raw: bytes


def summarise(ack: bytes) -> AckSummary:
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 3:
            fields = segment.decode("latin-1").split(chr(segment[3]))
            return AckSummary(fields[1] if len(fields) > 1 else "", fields[3] if len(fields) > 3 else "", ack)
    return AckSummary("", "no MSA segment in the answer", ack)
