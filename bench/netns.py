"""Benchmarks run in a private network namespace holding only loopback (Orthanc and storescp
cannot bind to loopback alone): no traffic leaves the machine. Needs root. What a benchmark
starts there is stopped when it ends, however it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_MARK = "VMGATEWAY_BENCH_NETNS"


def rerun_in_private_network() -> None:
    """Re-execute this script inside `unshare -n` with loopback up, unless already there."""
    if os.environ.get(_MARK) != "1":
        os.execvpe("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                               sys.executable, *sys.argv], os.environ | {_MARK: "1"})


@contextmanager
def stopped_at_exit(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`process`, terminated and waited for when the block ends (an Orthanc left running after a
    failed start once held its ports for the next run)."""
    try:
        yield process
    finally:
        process.terminate()
        process.wait(60)
