"""Is a received dataset whole? A walk over its element headers, values skipped unread.

pydicom is lenient by design: it reads a dataset whose last value is cut short without a
complaint, and metadata extraction stops before the pixel data anyway. A truncated instance
must be refused (the sender keeps it and retries), so we walk the structure ourselves:
every element header, every item of undefined-length sequences and encapsulated pixel
data, and require that the last value ends exactly at the end of the file. Only headers are
read, so a 1 GB multi-frame loop costs a few thousand small reads, not 1 GB.

A cut that falls exactly between two elements leaves a shorter dataset that is valid in
itself; no structure check can see that. Over DIMSE it cannot happen (the last P-DATA
fragment is flagged); it needs a file already broken on the sender's disk.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.uid import UID

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class Truncated(Exception):
    """The dataset ends before its own structure says it does."""


class _Walker:
    def __init__(self, handle: BinaryIO, size: int, explicit: bool, little: bool) -> None:
        self.handle = handle
        self.size = size
        self.explicit = explicit
        self.endian = "<" if little else ">"

    def read(self, count: int) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise Truncated(f"dataset ends at byte {self.size} inside an element header")
        return data

    def skip(self, length: int) -> None:
        end = self.handle.tell() + length
        if end > self.size:
            raise Truncated(f"a value runs to byte {end}, past the end of the data at {self.size}")
        self.handle.seek(end)

    def tag(self) -> int:
        group, element = struct.unpack(self.endian + "HH", self.read(4))
        return group << 16 | element

    def dataset(self, until: int | None) -> None:
        """Walk elements until EOF (top level) or the delimiter tag `until` (nested)."""
        while True:
            if until is None and self.handle.tell() == self.size:
                return
            tag = self.tag()
            if tag == until:
                self.read(4)
                return
            if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
                raise Truncated(f"misplaced delimiter {tag:08X}")
            vr, length = self.header()
            if length == _UNDEFINED:
                self.items(implicit_inside=vr == b"UN")
            else:
                self.skip(length)

    def header(self) -> tuple[bytes | None, int]:
        if not self.explicit:
            return None, struct.unpack(self.endian + "L", self.read(4))[0]
        vr = self.read(2)
        if vr in _LONG_VRS:
            self.read(2)
            return vr, struct.unpack(self.endian + "L", self.read(4))[0]
        return vr, struct.unpack(self.endian + "H", self.read(2))[0]

    def items(self, implicit_inside: bool) -> None:
        """Items of an undefined-length sequence or of encapsulated pixel data."""
        saved = self.explicit
        if implicit_inside:
            self.explicit = False  # an undefined-length UN holds implicit VR little endian
        try:
            while True:
                tag = self.tag()
                length = struct.unpack(self.endian + "L", self.read(4))[0]
                if tag == _SEQUENCE_END:
                    return
                if tag != _ITEM:
                    raise Truncated(f"expected an item, found tag {tag:08X}")
                if length == _UNDEFINED:
                    self.dataset(until=_ITEM_END)
                else:
                    self.skip(length)
        finally:
            self.explicit = saved


def check_whole(handle: BinaryIO, dataset_offset: int, size: int, transfer_syntax: UID) -> None:
    """Raise Truncated unless the dataset from `dataset_offset` ends exactly at `size`.

    Deflated datasets are not walked: zlib itself notices a cut stream when they are parsed.
    """
    if transfer_syntax.is_deflated:
        return
    handle.seek(dataset_offset)
    _Walker(handle, size, transfer_syntax.is_implicit_VR is False, transfer_syntax.is_little_endian).dataset(None)


def dataset_offset(handle: BinaryIO) -> int:
    """Where the dataset starts in a Part 10 file whose meta begins with its group length.

    pynetdicom writes (0002,0000) first in every file it receives, so this is exact for
    everything our receiver stores.
    """
    handle.seek(128)
    header = handle.read(16)
    if len(header) != 16 or header[:4] != b"DICM" or header[4:8] != b"\x02\x00\x00\x00":
        raise Truncated("no DICOM file meta with a group length")
    (group_length,) = struct.unpack("<L", header[12:16])
    return 144 + group_length
