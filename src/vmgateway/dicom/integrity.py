"""One pass over a received Part 10 file: is it whole, and what are the elements we want?

pydicom is lenient by design: it reads a dataset whose last value is cut short without a
complaint, and metadata extraction stops before the pixel data anyway. A truncated instance
must be refused (the sender keeps it and retries), so we walk the structure ourselves: every
element header, every item of undefined-length sequences and encapsulated pixel data, and
require that the last value ends exactly at the end of the file. The walk runs over a memory
map and reads only headers (and the few top-level values asked for), so a 1 GB multi-frame
loop costs a few thousand header reads, not 1 GB, and a small instance 0.13 ms (0.36 ms before the
element loop was written for speed, see `_Walker`) — a full
pydicom parse would cost several times that on every instance. The values found are handed
back as pydicom raw elements, so pydicom still does the decoding (character sets, VRs).

A deflated data set (Deflated Explicit VR Little Endian) is inflated first, chunk by chunk
into a temporary file beside the received one, its zlib stream required to end where the file
does, and then walked like any other: a cut inside the stream was once acknowledged.

A cut that falls exactly between two elements leaves a shorter dataset that is valid in
itself; no structure check can see that. Over DIMSE it cannot happen (the last P-DATA
fragment is flagged); it needs a file already broken on the sender's disk.
"""

from __future__ import annotations

import mmap
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import UID

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_TRANSFER_SYNTAX = 0x00020010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PREAMBLE = 128


class Truncated(Exception):
    """The file ends before its own structure says it does, or is no Part 10 file."""


class RepeatedElement(Exception):
    """A top-level element appears twice: which value is meant cannot be known (PS3.5 7.1 allows
    each tag once), so the dataset is refused rather than one value silently chosen."""


@dataclass
class Scan:
    transfer_syntax: UID
    elements: dict[int, RawDataElement] = field(default_factory=dict)
    """Top-level elements of the dataset that were asked for, as found."""


class _Walker:
    """The walk. Its element loop keeps the position in a local and reads each header with one
    precompiled struct: 0.47 µs per element here (0.13 ms for a small instance's 266), against
    1.4 µs when every field was a method call."""

    def __init__(self, buffer: mmap.mmap, explicit: bool, little: bool, wanted: frozenset[int] = frozenset()) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.explicit = explicit
        self.little = little
        prefix = "<" if little else ">"
        self._explicit_header = struct.Struct(prefix + "HH2sH")
        self._implicit_header = struct.Struct(prefix + "HHL")
        self._long = struct.Struct(prefix + "L")
        self.wanted = wanted
        self.found: dict[int, RawDataElement] = {}
        self.seen: set[int] = set()
        """Top-level tags met so far."""

    def take(self, count: int) -> int:
        """Claim `count` bytes at the current position; return where they start."""
        start = self.pos
        if start + count > self.size:
            raise Truncated(f"the data ends at byte {self.size}, inside an element that needs {start + count}")
        self.pos = start + count
        return start

    def dataset(self, until: int | None, top_level: bool) -> None:
        """Walk elements until the end (top level) or the delimiter tag `until` (nested)."""
        buffer, size, seen, wanted = self.buffer, self.size, self.seen, self.wanted
        explicit = self.explicit
        header = (self._explicit_header if explicit else self._implicit_header).unpack_from
        long = self._long.unpack_from
        pos = self.pos
        while True:
            if until is None and pos == size:
                self.pos = pos
                return
            at, pos = pos, pos + 8
            if pos > size:
                raise Truncated(f"the data ends at byte {size}, inside an element header that needs {pos}")
            if explicit:
                group, element, vr, length = header(buffer, at)
                if group == 0xFFFE:  # item and delimiters carry no VR, even in explicit VR
                    (length,) = long(buffer, at + 4)
                elif vr in _LONG_VRS:
                    pos += 4
                    if pos > size:
                        raise Truncated(f"the data ends at byte {size}, inside an element header that needs {pos}")
                    (length,) = long(buffer, at + 8)
                elif not vr.isascii():
                    raise Truncated(f"no valid VR at byte {at + 4}")
            else:
                group, element, length = header(buffer, at)
                vr = None
            tag = group << 16 | element
            if tag == until:
                self.pos = pos
                return
            if group == 0xFFFE and tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
                raise Truncated(f"misplaced delimiter {tag:08X} at byte {at}")
            if top_level:
                if tag in seen:
                    raise RepeatedElement(f"element ({group:04X},{element:04X}) appears more than once")
                seen.add(tag)
            if length == _UNDEFINED:
                self.pos = pos
                self.items(implicit_inside=vr == b"UN")
                pos = self.pos
                continue
            start, pos = pos, pos + length
            if pos > size:
                raise Truncated(f"the data ends at byte {size}, inside an element that needs {pos}")
            if top_level and tag in wanted:
                self.found[tag] = RawDataElement(Tag(tag), None if vr is None else vr.decode("ascii"), length,
                                                 bytes(buffer[start:pos]), start, not explicit, self.little)

    def items(self, implicit_inside: bool) -> None:
        """Items of an undefined-length sequence or of encapsulated pixel data."""
        saved = self.explicit
        if implicit_inside:
            self.explicit = False  # an undefined-length UN holds implicit VR little endian
        try:
            while True:
                at = self.take(8)
                group, element, length = self._implicit_header.unpack_from(self.buffer, at)
                tag = group << 16 | element
                if tag == _SEQUENCE_END:
                    return
                if tag != _ITEM:
                    raise Truncated(f"expected an item, found tag {tag:08X} at byte {at}")
                if length == _UNDEFINED:
                    self.dataset(until=_ITEM_END, top_level=False)
                else:
                    self.take(length)
        finally:
            self.explicit = saved

    def file_meta(self) -> UID:
        """Walk group 0002 (always explicit VR little endian); return the transfer syntax."""
        self.pos = _PREAMBLE
        if self.buffer[self.take(4) : self.pos] != b"DICM":
            raise Truncated("no DICOM file meta (the 'DICM' prefix is missing)")
        syntax = None
        while self.pos + 4 <= self.size and struct.unpack_from("<H", self.buffer, self.pos)[0] == 0x0002:
            _, element, vr, length = self._explicit_header.unpack_from(self.buffer, self.take(8))
            if vr in _LONG_VRS:
                (length,) = self._long.unpack_from(self.buffer, self.take(4))
            start = self.take(length)
            if element == _TRANSFER_SYNTAX & 0xFFFF:
                syntax = bytes(self.buffer[start : start + length]).rstrip(b"\0 ").decode("ascii", "replace")
        if not syntax:
            raise Truncated("the file meta has no Transfer Syntax UID")
        return UID(syntax)


MAX_INFLATED = 2 << 30
"""How large a deflated data set may inflate (deflate is used for small structured data; a bomb
of a few MB inflating to gigabytes is refused at this size, written to disk as it inflates,
never held in memory)."""
_INFLATE_CHUNK = 1 << 20


class TooLarge(Exception):
    """A deflated data set inflates past MAX_INFLATED."""


def _inflated(buffer: mmap.mmap, start: int, beside: Path) -> tempfile._TemporaryFileWrapper[bytes]:
    """The deflated data set from `start` on, inflated into a temporary file beside the received
    one (the spool's disk), chunk by chunk. Truncated when the zlib stream ends early, or more
    than its even-length padding follows it: a cut inside a valid stream was once acknowledged."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    target = tempfile.NamedTemporaryFile(dir=beside.parent, prefix=".inflated-", suffix=".tmp")
    try:
        written = 0
        for at in range(start, len(buffer), _INFLATE_CHUNK):
            chunk = buffer[at:at + _INFLATE_CHUNK]
            while chunk and not inflater.eof:
                out = inflater.decompress(chunk, _INFLATE_CHUNK)
                chunk = inflater.unconsumed_tail
                written += len(out)
                if written > MAX_INFLATED:
                    raise TooLarge(f"the deflated data set inflates past {MAX_INFLATED >> 20} MB")
                target.write(out)
            if inflater.eof:
                break
        if not inflater.eof:  # what zlib still holds once all input is in
            out = inflater.flush(_INFLATE_CHUNK)
            if written + len(out) > MAX_INFLATED:
                raise TooLarge(f"the deflated data set inflates past {MAX_INFLATED >> 20} MB")
            target.write(out)
        if not inflater.eof:
            raise Truncated("its zlib stream is cut short")
        rest = inflater.unused_data + buffer[at + _INFLATE_CHUNK:] if len(buffer) > start else b""
        if rest.strip(b"\0"):
            raise Truncated("bytes follow the end of the deflated data set")
        target.flush()
        return target
    except zlib.error as exc:
        target.close()
        raise Truncated(f"the deflated data set is no valid deflate stream: {exc}") from None
    except BaseException:
        target.close()
        raise


def scan_part10(path: Path, wanted: frozenset[int]) -> Scan:
    """Check that the Part 10 file at `path` is whole; collect the `wanted` top-level elements.
    A deflated data set is inflated first (`_inflated`) and walked as it inflated."""
    with open(path, "rb") as handle:
        try:
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise Truncated("the file is empty") from None
    with buffer:
        meta = _Walker(buffer, explicit=True, little=True)
        syntax = meta.file_meta()
        if not syntax.is_deflated:
            walker = _Walker(buffer, explicit=not syntax.is_implicit_VR, little=syntax.is_little_endian,
                             wanted=wanted)
            walker.pos = meta.pos
            walker.dataset(until=None, top_level=True)
            return Scan(syntax, walker.found)
        with _inflated(buffer, meta.pos, path) as inflated:
            if inflated.tell() == 0:
                raise Truncated("the deflated data set inflates to nothing")
            with mmap.mmap(inflated.fileno(), 0, access=mmap.ACCESS_READ) as body:
                walker = _Walker(body, explicit=True, little=True, wanted=wanted)  # deflated: explicit VR LE inside
                walker.dataset(until=None, top_level=True)
                return Scan(syntax, walker.found)
