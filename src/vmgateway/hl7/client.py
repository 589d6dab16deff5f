"""`vmgateway send-hl7`: send messages MLLP-framed, as an instrument would, and read the ACKs."""

from __future__ import annotations

import socket
import time

from vmgateway.hl7.framing import Frame, MllpDecoder, framed
from vmgateway.hl7.messages import AckSummary, summarise

_ACK_LIMIT = 1 << 20


def test_message(sending_application: str, facility: str) -> tuple[str, bytes]:
    """(MSH-10, message): an ORU^R01 with processing ID T, to see the listener ACK end to end. In
    UTF-8, and says so in MSH-18: the facility is the site's name (Djurkliniken Årsta)."""
    control_id = f"TEST{int(time.time() * 1000)}"
    message = (f"MSH|^~\\&|{sending_application}|{facility or 'SITE'}|VM_GATEWAY|VM_GATEWAY|"
               f"{time.strftime('%Y%m%d%H%M%S')}||ORU^R01|{control_id}|T|2.5||||||UNICODE UTF-8\r").encode()
    return control_id, message


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
