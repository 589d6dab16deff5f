"""The disk's own limits, measured beside the other benchmarks in the same run. By hand:

    .venv/bin/python bench/disk_limit.py [FOLDER]

(a) durable small writes: a loop of 4 KiB write + fdatasync on one file — the floor under
any acknowledgement that waits for the disk; (b) the durable write rate of large data:
`dd bs=8M count=64 conv=fdatasync` (512 MiB). FOLDER defaults to a temporary folder on the
file system of this checkout (where the gateway's data would be).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYNCS = 2000


def fdatasync_ms(folder: Path) -> float:
    """Median milliseconds for one 4 KiB write + fdatasync."""
    path = folder / "fdatasync.probe"
    block = os.urandom(4096)
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(SYNCS):
            began = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def dd_mb_s(folder: Path) -> float:
    path = folder / "dd.probe"
    try:
        done = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=8M", "count=64", "conv=fdatasync"],
                              capture_output=True, text=True, check=True)
    finally:
        path.unlink(missing_ok=True)
    seconds = float(re.findall(r"([\d.]+) s,", done.stderr)[-1])
    return 64 * 8 * 2**20 / seconds / 1e6


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        syncs = [fdatasync_ms(folder) for _ in range(3)]
        rates = [dd_mb_s(folder) for _ in range(3)]
    print(f"4 KiB write + fdatasync: median {statistics.median(syncs):.3f} ms"
          f" (runs: {', '.join(f'{s:.3f}' for s in syncs)})")
    print(f"dd bs=8M count=64 conv=fdatasync: median {statistics.median(rates):.0f} MB/s"
          f" (runs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
