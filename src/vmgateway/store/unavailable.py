"""The one kind of error that means "the store cannot keep a promise now, try again later".

The disk below its watermark (SpoolFull) and a journal that takes no write or read (JournalError)
are both this. Each protocol's seam maps it once to its own way of saying "try again later" —
C-STORE 0xA700 (C-FIND 0xC001, N-CREATE/N-SET 0x0110), HL7 AE/CE, an ASTM NAK — so the sender
keeps its data; DICOM, HL7 and ASTM once each listed the store's errors separately, and a new
one would have been missed by some.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store cannot take (or give) data now; `said` is how a sender hears it."""

    said = "gateway could not store it"
    """What the sender is told, before ", retry later" (short: a DICOM Error Comment has 64 characters)."""
