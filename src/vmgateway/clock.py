"""Whether the box's clock can be trusted: the kernel's NTP state.

Times in the journal, TLS certificate checks and the PACS poll's date range all rest on it.
"""

from __future__ import annotations

import ctypes

_TIME_ERROR = 5
"""adjtimex's answer when the clock is not synchronised."""


def clock_synchronised() -> bool | None:
    """The kernel's NTP state (adjtimex, read only): None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.create_string_buffer(512))  # struct timex, modes = 0: read only
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != _TIME_ERROR
