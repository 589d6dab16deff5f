"""HL7 character sets (MSH-18, HL7 table 0211) and the Python codecs that read them."""

from __future__ import annotations

import codecs

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
