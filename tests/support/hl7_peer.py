"""An HL7 sender as the tests play it: MLLP frames built by hand (to send them broken too), a
raw peer that reads ACK frames, real instruments' messages."""

from __future__ import annotations

import socket

from tests.support.clients import SAMPLES
from tests.support.gateway import GatewayProcess

HEMATOLOGY = (SAMPLES / "oru_r01_hematology_dog_v231.hl7").read_bytes()


def frame(message: bytes, trailer: bytes = b"\x1c\r") -> bytes:
    return b"\x0b" + message + trailer


def with_control_id(message: bytes, control_id: str) -> bytes:
    fields = message.split(b"\r", 1)[0].split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + b"\r" + message.split(b"\r", 1)[1]


class Peer:
    """A raw MLLP client: sends bytes as told, reads ACK frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ack(self) -> bytes:
        while b"\x1c" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before an ACK; had {self.buffer!r}")
            self.buffer += data
        start = self.buffer.index(b"\x0b") + 1
        end = self.buffer.index(b"\x1c")
        ack, self.buffer = self.buffer[start:end], self.buffer[end + 2 :]
        return ack

    def closed_by_gateway(self) -> bool:
        """True when the gateway closes the connection (EOF or reset), reading what is left."""
        try:
            while data := self.sock.recv(65536):
                self.buffer += data
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def msa(ack: bytes) -> list[str]:
    segment = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return segment.decode("latin-1").split("|")


def hl7_answer(gateway: GatewayProcess, message: bytes) -> str:
    peer = Peer(gateway.hl7_port)
    try:
        peer.send(frame(message))
        return msa(peer.ack())[1]
    finally:
        peer.close()
