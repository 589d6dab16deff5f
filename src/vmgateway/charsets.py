"""HL7 character sets (MSH-18, HL7 table 0211) and the Python codecs that read them."""

from __future__ import annotations

import codecs
import re

HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
"""How HL7 v2 (ER7 encoding) is labelled over HTTP: the feed's content and pushed messages."""
FALLBACK_CHARSET = "8859/1"
"""What a message without MSH-18 (or with bytes that do not fit it) is read as."""

_CODECS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
}
KNOWN = tuple(_CODECS)


def codec_for(charset: str) -> str:
    """Python codec for an MSH-18 value; ISO-8859-1 when unknown or empty.

    Senders also write codec names HL7 does not list ("UTF-8", "ISO-8859-1"): those are
    accepted when Python knows them.
    """
    name = _CODECS.get(charset.strip().upper())
    if name:
        return name
    try:
        return codecs.lookup(charset.strip()).name
    except LookupError:
        return "latin-1"


def http_charset(charset: str) -> str:
    """The IANA name of an MSH-18 charset, for an HTTP Content-Type."""
    name = codecs.lookup(codec_for(charset or FALLBACK_CHARSET)).name  # e.g. "iso8859-1"
    if name.startswith("iso8859-"):
        return "ISO-8859-" + name.removeprefix("iso8859-")
    return {"ascii": "US-ASCII"}.get(name, name.upper())


def hl7_content_type(charset_used: str | None, declared: str | None) -> str:
    """Content-Type of a kept message over HTTP: the charset it was read with, else the one it declared."""
    return f"{HL7_MEDIA_TYPE}; charset={http_charset(charset_used or declared or '')}"


def is_known(charset: str) -> bool:
    if charset.strip().upper() in _CODECS:
        return True
    try:
        codecs.lookup(charset.strip())
    except LookupError:
        return False
    return True


HL7_DELIMITERS = "|^~\\&"
"""The encoding characters MSH-1/MSH-2 declare (the gateway's own messages always use these)."""
FIELD_TEXT_PATTERN = r"^[^|^~\\&\x00-\x1f\x7f-\x9f]*$"
"""What `unfit_for_a_field` allows, as a pattern for the API's documentation (lone surrogates,
which a pattern cannot name, are refused too)."""


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A code point that is half of a UTF-16 pair on its own: no character, and no UTF-8 encodes it."""


def is_control(character: str) -> bool:
    """C0 and C1 controls and DEL: the characters that frame, break or forge lines and messages."""
    code = ord(character)
    return code < 0x20 or 0x7F <= code < 0xA0


def control_character(value: str) -> str | None:
    """The first control character in `value`, as U+XXXX, or None."""
    found = next((character for character in value if is_control(character)), None)
    return None if found is None else f"U+{ord(found):04X}"


def unfit_for_a_field(value: str) -> str | None:
    """Why `value` cannot go into an HL7 or ASTM field as it is, or None. A delimiter would split
    the field; a control character (C0 and C1, DEL) may be a framing byte — MLLP's 0x0B and 0x1C,
    E1381's STX, ETX, EOT, ENQ, ETB — that ends a message where the sender did not mean it to (an
    analyzer once acknowledged an order cut after its PID); a lone surrogate cannot be encoded."""
    for character in value:
        if character in HL7_DELIMITERS:
            return f"{character!r} is an HL7 delimiter"
        if is_control(character):
            return f"U+{ord(character):04X} is a control character"
        if LONE_SURROGATE.match(character):
            return f"U+{ord(character):04X} is a lone surrogate, not a character"
    return None


_FRAMING_BYTES = (0x00, 0x0A, 0x0B, 0x0D, 0x1C)
_PROBE = "".join(chr(code) for code in range(0x20, 0x3400) if not is_control(chr(code))) + "\u0d1c\U0001f600"
"""Characters an order may carry (Latin, Greek, Cyrillic, Hebrew, Arabic, CJK punctuation and kana,
U+0D1C whose UTF-16 is 1C 0D, an emoji)."""


def frames_safely(charset: str) -> bool:
    """Whether text in `charset` can travel in an MLLP frame: ASCII stays ASCII (the analyzer must
    read "MSH|^~\\&"), and no other character encodes to a framing byte (UTF-16 and UTF-32 do:
    U+0D1C is 1C 0D, MLLP's end of block)."""
    codec = codec_for(charset)
    try:
        if "MSH|^~\\&\r".encode(codec) != b"MSH|^~\\&\r":
            return False
    except UnicodeError:
        return False
    encoded = _PROBE.encode(codec, errors="ignore")
    return not any(byte in encoded for byte in _FRAMING_BYTES)
