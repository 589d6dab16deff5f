"""`vmgateway send-hl7`: send messages MLLP-framed, as an instrument would, and read the ACKs."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from vmgateway.hl7.framing import Frame, MllpDecoder
from vmgateway.hl7.receiver import framed

_ACK_LIMIT = 1 << 20


@dataclass(frozen=True)
class AckSummary:
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


def send_messages(host: str, port: int, messages: list[bytes], timeout: float = 30) -> list[AckSummary]:
    """Send each message on one connection and wait for its ACK before the next."""
    answers = []
    decoder = MllpDecoder(_ACK_LIMIT)
    with socket.create_connection((host, port), timeout=timeout) as connection:
        for message in messages:
            connection.sendall(framed(message))
            answers.append(_read_ack(connection, decoder))
    return answers


def _read_ack(connection: socket.socket, decoder: MllpDecoder) -> AckSummary:
    while True:
        data = connection.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection without an ACK")
        for event in decoder.feed(data):
            if isinstance(event, Frame):
                return summarise(bytes(event.payload))
