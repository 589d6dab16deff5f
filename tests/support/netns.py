"""A private network namespace with only loopback, for peers that cannot bind 127.0.0.1 alone.

Orthanc 1.10 always listens on every interface. `unshare(CLONE_NEWNET)` moves the calling
thread (pytest's) into a fresh namespace; the processes and threads it starts from then on
are in there too, and nothing they open can reach another machine. `setns` brings the thread
back afterwards. Needs root (CAP_SYS_ADMIN), as the whole test command does.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def loopback_only() -> Iterator[None]:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed: the tests need root")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's network namespace failed")
    finally:
        os.close(home)
