"""A stand-in for systemd in the upgrade tests (there is no systemd as PID 1 here).

    python -m tests.support.service start ROOT CONFIG LOG   run ROOT/current/venv/bin/vmgateway in the background
    python -m tests.support.service stop ROOT               SIGTERM (the gateway drains), wait, SIGKILL after 60 s
    python -m tests.support.service status ROOT             exit 0 while it runs

It does for the test what the unit does on the box: start whatever `current` points at, stop it
through a drain, say whether it runs. The pid is kept in ROOT/service.pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_TIMEOUT_S = 60


def _pid(root: Path) -> int | None:
    try:
        return int((root / "service.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that will never reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def start(root: Path, config: str, log: str) -> int:
    with open(log, "ab") as output:
        proc = subprocess.Popen([str(root / "current" / "venv" / "bin" / "vmgateway"), "run", "--config", config],
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    (root / "service.pid").write_text(str(proc.pid))
    return 0


def stop(root: Path) -> int:
    pid = _pid(root)
    if pid is None or not alive(pid):
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive(pid):  # not our child: nothing to wait() on, so watch /proc (bounded)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        time.sleep(0.05)
    return 0


def status(root: Path) -> int:
    pid = _pid(root)
    return 0 if pid is not None and alive(pid) else 3


if __name__ == "__main__":
    action, root = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        sys.exit(start(root, sys.argv[3], sys.argv[4]))
    sys.exit({"stop": stop, "status": status}[action](root))
