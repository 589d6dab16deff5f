"""Benchmarks run in a private network namespace holding only loopback (Orthanc and storescp
cannot bind to loopback alone): no traffic leaves the machine. Needs root."""

from __future__ import annotations

import os
import sys

_MARK = "VMGATEWAY_BENCH_NETNS"


def rerun_in_private_network() -> None:
    """Re-execute this script inside `unshare -n` with loopback up, unless already there."""
    if os.environ.get(_MARK) != "1":
        os.execvpe("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                               sys.executable, *sys.argv], os.environ | {_MARK: "1"})
