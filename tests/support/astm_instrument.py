"""A simulated ASTM instrument: the sending side of E1381 (LIS1-A), with ways to misbehave.

It establishes with ENQ, sends each record in frames of at most 240 characters of text (longer
records split with ETB, the last part ended with ETX), numbers frames 1..7, 0, 1.., waits for
each ACK (resending on NAK, at most 6 times, as the standard says) and ends with EOT.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ENQ, ACK, NAK, EOT, STX, ETX, ETB = b"\x05", b"\x06", b"\x15", b"\x04", b"\x02", b"\x03", b"\x17"
MAX_TEXT = 240
MAX_TRIES = 6


def frame(number: int, text: bytes, final: bool, corrupt: bool = False) -> bytes:
    body = str(number % 8).encode() + text + (ETX if final else ETB)
    total = (sum(body) + (1 if corrupt else 0)) % 256
    return STX + body + b"%02X" % total + b"\r\n"


def frames_of(records: list[bytes]) -> list[tuple[bytes, bool]]:
    """(text, ends a record) for each frame; a record's text carries its CR."""
    out = []
    for record in records:
        text = record + b"\r"
        parts = [text[i:i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)]
        out += [(part, index == len(parts) - 1) for index, part in enumerate(parts)]
    return out


@dataclass
class Instrument:
    host: str
    port: int
    timeout: float = 10
    sock: Any = None
    """A socket, or a PtyMaster: anything with sendall, recv and close."""
    naks: int = 0
    acknowledged_messages: list[bytes] = field(default_factory=list)
    """Messages whose final frame was ACKed: the gateway promised to keep these."""

    def connect(self) -> Instrument:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def reply(self) -> bytes:
        assert self.sock is not None
        answer = self.sock.recv(1)
        if not answer:
            raise ConnectionError("the gateway closed the connection")
        return bytes(answer)

    def establish(self) -> bytes:
        assert self.sock is not None
        self.sock.sendall(ENQ)
        return self.reply()

    def send_frame(self, number: int, text: bytes, final: bool,
                   corrupt_first: bool = False, resend_after_ack: bool = False) -> bytes:
        """Send one frame until ACKed (at most 6 tries); the last answer."""
        assert self.sock is not None
        answer = NAK
        for attempt in range(MAX_TRIES):
            self.sock.sendall(frame(number, text, final, corrupt=corrupt_first and attempt == 0))
            answer = self.reply()
            if answer == ACK:
                if resend_after_ack:  # as if the ACK had been lost on the line
                    self.sock.sendall(frame(number, text, final))
                    answer = self.reply()
                return answer
            self.naks += 1
        return answer

    def receive_message(self) -> list[bytes]:
        """The receiving side, for the host's answer to a query: ACK its ENQ and each frame (checked)
        until EOT; the records it sent."""
        assert self.sock is not None
        assert self.reply() == ENQ, "the host did not establish"
        self.sock.sendall(ACK)
        text = b""
        while (first := self.reply()) != EOT:
            assert first == STX, f"{first!r} where a frame starts"
            rest = b""
            while not rest.endswith(b"\r\n"):
                rest += self.reply()
            body, total = rest[:-4], rest[-4:-2]
            assert b"%02X" % (sum(body) % 256) == total, "a frame with a wrong checksum"
            text += body[1:-1]
            self.sock.sendall(ACK)
        return [record for record in text.split(b"\r") if record]

    def send_message(self, records: list[bytes], misbehave: Callable[[int], dict[str, bool]] | None = None,
                     stop_after: int | None = None) -> bool:
        """One message in one transmission; True when its final frame was ACKed. `misbehave(n)`
        gives send_frame's options for frame n; `stop_after`: send EOT after that many frames."""
        assert self.establish() == ACK, "the gateway did not take the establishment"
        parts = frames_of(records)
        answer = ACK
        for index, (text, ends_record) in enumerate(parts):
            if stop_after is not None and index == stop_after:
                break
            options = misbehave(index) if misbehave else {}
            answer = self.send_frame(index + 1, text, ends_record, **options)
            if answer != ACK:
                break
        assert self.sock is not None
        self.sock.sendall(EOT)
        done = answer == ACK and stop_after is None
        if done:
            self.acknowledged_messages.append(b"".join(record + b"\r" for record in records))
        return done


def query_message(*samples: str) -> list[bytes]:
    """A host query: the orders for these samples, please (Q-3 `^SAMPLE`, Q-13 `O`)."""
    records = [b"H|\\^&|||VetScan^VS2^3.1.35|||||||P|LIS2-A2|20261127101500"]
    records += [f"Q|{n}|^{sample}||^^^ALL||||||||O".encode() for n, sample in enumerate(samples, start=1)]
    return records + [b"L|1|N"]


def result_message(sample: str, patient: str, results: int = 3, comment_length: int = 0) -> list[bytes]:
    """A chemistry result set shaped as a VetScan-style analyzer sends it."""
    records = [b"H|\\^&|||VetScan^VS2^3.1.35|||||||P|LIS2-A2|20261127101500",
               f"P|1||{patient}||Fido^Berg||20190401|M".encode(),
               f"O|1|{sample}||^^^COMPREHENSIVE|R|20261127101000|||||||||SERUM".encode()]
    for number, (code, value, unit) in enumerate([("ALB", "31", "g/L"), ("ALP", "88", "U/L"), ("GLU", "5.5", "mmol/L"),
                                                  ("BUN", "7.1", "mmol/L"), ("CRE", "96", "umol/L")][:results]):
        records.append(f"R|{number + 1}|^^^{code}|{value}|{unit}||N||F||||20261127101400".encode())
    if comment_length:
        records.append(b"C|1|I|" + b"x" * comment_length + b"|G")
    records.append(b"L|1|N")
    return records


class PtyMaster:
    """The instrument's end of a pseudo-terminal pair: the gateway opens the other end as its
    serial port, as it would a USB-serial adapter."""

    def __init__(self, timeout: float = 10) -> None:
        self.fd, self.slave_fd = os.openpty()
        self.device = os.ttyname(self.slave_fd)
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        os.write(self.fd, data)

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            raise TimeoutError("no answer on the serial line")
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.slave_fd)


