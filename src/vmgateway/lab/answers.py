"""What an instrument's ACK says about a message: pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from vmgateway.charsets import codec_for

MAX_ANSWER_TEXT = 2000
"""What is kept of an instrument's words on a message (MSA-3, ERR): enough for a person, bounded
whatever the instrument sends (its ACK may be up to a megabyte)."""


class NotAnAnswer(ValueError):
    """The bytes are no ACK to the message sent (no MSA, or another message's control id)."""


@dataclass(frozen=True)
class Answer:
    code: str
    """MSA-1: AA/CA accepted; AE/CE an error; AR/CR rejected."""
    text: str
    """MSA-3 and ERR, what the instrument says about it."""


def read_answer(raw: bytes, control_id: str, charset: str) -> Answer:
    """The answer to message `control_id` (MSA-2 must name it)."""
    text = raw.decode(codec_for(charset), errors="replace")
    segments = [segment for segment in text.replace("\n", "\r").split("\r") if segment]
    msa = next((segment for segment in segments if segment.startswith("MSA")), None)
    if not segments or not segments[0].startswith("MSH") or msa is None:
        raise NotAnAnswer(f"no ACK: {text[:80]!r}")
    separator = segments[0][3:4] or "|"
    fields = msa.split(separator)
    code = fields[1].strip().upper() if len(fields) > 1 else ""
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise NotAnAnswer(f"MSA-1 is {code!r}, no acknowledgment code")
    if len(fields) < 3 or fields[2].strip() != control_id:
        raise NotAnAnswer(f"an answer to {fields[2].strip() if len(fields) > 2 else '?'!r}, not to {control_id}")
    said = [fields[3].strip()] if len(fields) > 3 and fields[3].strip() else []
    said += [segment for segment in segments if segment.startswith("ERR")]
    text = "; ".join(said)
    return Answer(code, text if len(text) <= MAX_ANSWER_TEXT else text[:MAX_ANSWER_TEXT - 1] + "…")
