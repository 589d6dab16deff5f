"""The E1381 (LIS1-A) low-level protocol without I/O: the receiving side (bytes in, replies out),
and the frames the gateway sends when it answers a host query.

    idle --ENQ--> ACK --> transfer: frames  STX FN text ETB|ETX C1 C2 CR LF, each ACKed or NAKed
    transfer --EOT--> idle

FN counts 1..7, 0, 1..; the checksum is the sum of the bytes from FN through ETB/ETX, modulo
256, as two upper-case hex digits. A frame with a bad checksum or framing is NAKed (the sender
sends it again, up to six times); the same frame again after a lost ACK is ACKed and not used
twice. Frames ending in ETB are parts of one record (senders split records over 240
characters) and are joined here.

The promise: the frame that completes a message — the one whose record is the terminator L —
is not answered at once. `feed` hands the message over (`Message`), and only `answered(stored)`
gives its ACK (stored) or NAK (not: the sender keeps its copy and tries again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENQ, ACK, NAK, EOT, STX, ETX, ETB, CR, LF = b"\x05", b"\x06", b"\x15", b"\x04", b"\x02", b"\x03", b"\x17", b"\r", b"\n"
MAX_FRAME = 64 * 1024
"""Far above the 247 bytes E1381 allows: a lenient limit, against a sender that never ends a frame."""
MAX_MESSAGE = 16 * 2**20


@dataclass(frozen=True)
class Reply:
    data: bytes


@dataclass(frozen=True)
class Message:
    """A whole E1394 message (H … L), records separated by CR; its final frame awaits `answered`."""

    raw: bytes


@dataclass(frozen=True)
class Problem:
    """Something a person may want to read in the log (nothing is owed to the sender for it)."""

    text: str


Event = Reply | Message | Problem


def checksum(body: bytes) -> bytes:
    """Of FN … ETB/ETX: the sum modulo 256 as two upper-case hex digits."""
    return b"%02X" % (sum(body) % 256)


MAX_TEXT = 240
"""Text per frame when the gateway sends (E1381: a frame holds at most 247 bytes)."""


def frames(records: list[bytes]) -> list[bytes]:
    """The sending side: records (without their CR) as frames numbered 1..7, 0, 1.., a record over
    MAX_TEXT characters split over frames ending in ETB, its last frame in ETX."""
    out: list[bytes] = []
    for record in records:
        text = record + CR
        parts = [text[i:i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)]
        for index, part in enumerate(parts):
            body = str((len(out) + 1) % 8).encode() + part + (ETX if index == len(parts) - 1 else ETB)
            out.append(STX + body + checksum(body) + CR + LF)
    return out


@dataclass
class LinkReceiver:
    busy: bool = False
    """Answer ENQ with NAK (the sender tries again later): set while nothing can be stored."""
    in_transfer: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _expected: int = 1
    _last: int | None = None
    """The number of the last frame taken (a lost ACK brings it again)."""
    _record: bytearray = field(default_factory=bytearray)
    _message: bytearray = field(default_factory=bytearray)
    _final_start: int = 0
    _waiting: bool = False
    """A final frame was handed over and awaits `answered`."""

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while self._buffer and not self._waiting:
            if not self.in_transfer:
                events += self._idle()
            else:
                step = self._transfer()
                if step is None:
                    break
                events += step
        return events

    def _idle(self) -> list[Event]:
        start = self._buffer.find(ENQ)
        if start < 0:
            self._buffer.clear()  # anything but ENQ between transmissions is noise
            return []
        del self._buffer[:start + 1]
        if self.busy:
            return [Reply(NAK)]
        self.in_transfer, self._expected, self._last = True, 1, None
        self._record.clear()
        self._message.clear()
        return [Reply(ACK)]

    def _transfer(self) -> list[Event] | None:
        first = self._buffer[:1]
        if first == EOT:
            del self._buffer[:1]
            return self.end_of_transmission()
        if first == ENQ:  # a sender that starts again: a new establishment, the unfinished message dropped
            return self.end_of_transmission() + [Problem("ENQ during a transfer: the sender started again")]
        if first != STX:  # noise between frames
            starts = [i for i in (self._buffer.find(STX), self._buffer.find(EOT), self._buffer.find(ENQ)) if i >= 0]
            if not starts:
                self._buffer.clear()
                return None
            del self._buffer[:min(starts)]
            return []
        end = self._buffer.find(LF)
        if end < 0:
            if len(self._buffer) > MAX_FRAME:
                self._buffer.clear()
                return [Reply(NAK), Problem("a frame longer than any sender makes")]
            return None  # wait for the rest
        frame = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return self._frame(frame)

    def _frame(self, frame: bytes) -> list[Event]:
        # STX FN text ETB|ETX C1 C2 CR LF
        if len(frame) < 7 or frame[-2:] != CR + LF or frame[-5:-4] not in (ETB, ETX):
            return [Reply(NAK), Problem("a frame that is not STX FN … ETB|ETX C1 C2 CR LF")]
        body, sent_sum = frame[1:-4], frame[-4:-2]
        if checksum(body) != sent_sum.upper():
            said = sent_sum.decode(errors="replace")
            return [Reply(NAK), Problem(f"checksum {said} is not {checksum(body).decode()}")]
        number = body[:1]
        if not number.isdigit():
            return [Reply(NAK), Problem("a frame without a frame number")]
        if int(number) == self._last:
            return [Reply(ACK)]  # our ACK was lost and the sender sent the same frame again: used once
        if int(number) != self._expected:
            return [Reply(NAK), Problem(f"frame number {int(number)}, expected {self._expected}")]
        self._last, self._expected = self._expected, (self._expected + 1) % 8
        self._record += body[1:-1]
        if body[-1:] == ETB:
            return [Reply(ACK)]
        record, self._record = bytes(self._record), bytearray()
        record = record.rstrip(CR)
        if len(self._message) + len(record) > MAX_MESSAGE:
            self._message.clear()
            return [Reply(NAK), Problem("a message larger than 16 MiB")]
        self._final_start = len(self._message)
        self._message += record + CR
        if record[:1] == b"L":
            self._waiting = True
            return [Message(bytes(self._message))]
        return [Reply(ACK)]

    def answered(self, stored: bool) -> list[Event]:
        """The message's fate: ACK its final frame once stored, NAK it otherwise (the sender
        sends that frame again; the message so far is kept for it)."""
        self._waiting = False
        if stored:
            self._message.clear()
            return [Reply(ACK)] + self.feed(b"")
        self._last, self._expected = (self._expected - 2) % 8, (self._expected - 1) % 8  # it will come again
        del self._message[self._final_start:]
        return [Reply(NAK)] + self.feed(b"")

    def end_of_transmission(self) -> list[Event]:
        """EOT, or the link lost/timed out: back to idle; a message without its L record is dropped
        (its final frame was never ACKed, so nothing was promised)."""
        self.in_transfer, self._waiting = False, False
        dropped = bool(self._message or self._record)
        self._message.clear()
        self._record.clear()
        return [Problem("the transmission ended in the middle of a message")] if dropped else []
