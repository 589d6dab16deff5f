"""MLLP framing: `0x0B message 0x1C 0x0D`, read incrementally with bounded memory.

Our own code, because the small libraries' readers wait for `0x1C 0x0D` (an instrument that
leaves out the CR stalls them), cap messages at 64 KiB or insist on ASCII. This decoder:
- takes the end of a frame at `0x1C`, with or without the `0x0D` after it;
- skips what stands between frames (LF, CR, NUL from some senders), and reports other bytes
  outside a frame as garbage so the connection can be dropped;
- never holds more than `max_bytes` of one frame: beyond that it keeps only the head (enough
  to read an MSH and answer `AR`) and discards the rest until the frame ends.
"""

from __future__ import annotations

from dataclasses import dataclass

START = 0x0B
END = 0x1C
CR = 0x0D
_BETWEEN_FRAMES = b"\r\n\x00 \t"
HEAD_BYTES = 4096
"""How much of an oversized frame is kept: room for its MSH segment."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete message, bytes exactly as received between the start and end bytes."""

    payload: bytearray
    """Handed over, not copied: a 16 MB message is held once."""


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame longer than the limit ended; `head` is its beginning, `size` its full length."""

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes outside any frame that are not harmless separators: the peer does not speak MLLP."""

    sample: bytes


Event = Frame | Oversized | Garbage


class MllpDecoder:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversized_size = 0  # > 0 while discarding the rest of an oversized frame
        self._after_end = False  # just saw 0x1C: a following 0x0D belongs to the trailer

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (a half-open sender)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        position = 0
        while position < len(view):
            if not self._in_frame:
                position = self._outside(view, position, events)
            else:
                position = self._inside(view, position, events)
        return events

    def _outside(self, view: memoryview, position: int, events: list[Event]) -> int:
        byte = view[position]
        if self._after_end and byte == CR:
            self._after_end = False
            return position + 1
        self._after_end = False
        if byte == START:
            self._in_frame = True
            return position + 1
        if byte in _BETWEEN_FRAMES:
            return position + 1
        end = position
        while end < len(view) and view[end] != START:
            end += 1
        events.append(Garbage(bytes(view[position : min(end, position + 64)])))
        return end

    def _inside(self, view: memoryview, position: int, events: list[Event]) -> int:
        data = view[position:]
        end = _find(data, END)
        chunk = data if end < 0 else data[:end]
        self._take(chunk)
        if end < 0:
            return position + len(data)
        if self._oversized_size:
            events.append(Oversized(bytes(self._buffer), self._oversized_size))
            self._buffer.clear()
        else:
            events.append(Frame(self._buffer))
            self._buffer = bytearray()
        self._oversized_size = 0
        self._in_frame = False
        self._after_end = True
        return position + end + 1

    def _take(self, chunk: memoryview) -> None:
        if self._oversized_size:
            self._oversized_size += len(chunk)
            return
        if len(self._buffer) + len(chunk) <= self.max_bytes:
            self._buffer += chunk
            return
        self._oversized_size = len(self._buffer) + len(chunk)
        room = HEAD_BYTES - min(len(self._buffer), HEAD_BYTES)
        del self._buffer[HEAD_BYTES:]
        self._buffer += chunk[:room]


def framed(message: bytes) -> bytes:
    """`message` in MLLP framing, as it goes on the wire."""
    return bytes([START]) + message + bytes([END, CR])


def _find(view: memoryview, byte: int) -> int:
    """Index of `byte` in a buffer, searched in slices so a large one is never copied whole."""
    step = 65536
    for start in range(0, len(view), step):
        found = bytes(view[start : start + step]).find(byte)
        if found >= 0:
            return start + found
    return -1
