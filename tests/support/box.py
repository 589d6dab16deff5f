"""A Debian 12 box with systemd as PID 1, for tests of the gateway as it lives on a real box.

`systemd-nspawn --boot` starts a container from a cached debootstrap root (minbase with systemd,
python3, python3-venv and NUT: what a box has before the gateway), with an overlay so that every
test module starts from the same blank box and the cache is never written. The container has a
private network with loopback only: nothing in it reaches the registries or collides with the host.
Commands run inside with nsenter. (Recipe and what was seen: docs/systemd-box-testing.md.)
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

_boxes = itertools.count()
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,nut-server,nut-client"
CACHE = Path(os.environ.get("VMGATEWAY_BOX_CACHE", "/var/cache/vmgateway-tests"))
ROOT = CACHE / f"bookworm-{hashlib.sha256(PACKAGES.encode()).hexdigest()[:8]}"
NSPAWN_RUN = Path("/run/systemd/nspawn")
BOOT_TIMEOUT_S = 90


def _mirror() -> str:
    """The machine's own Debian mirror (the tests reach no other)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def blank_root() -> Path:
    """The cached root file system, made once (about a minute) under a lock."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ROOT / "usr" / "bin" / "python3").exists():
            partial = ROOT.with_name(ROOT.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial),
                            _mirror()], check=True, capture_output=True, timeout=1200)
            partial.rename(ROOT)
    return ROOT


class Box:
    """One booted container. `upper` holds everything the box wrote: boot again with the same
    upper to see the same box after a reboot or a cut."""

    def __init__(self, upper: Path, binds: dict[Path, str]) -> None:
        self.upper, self.binds = upper, binds
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.console = upper.with_name(upper.name + ".console")
        self.name = f"vmgw-test-{os.getpid()}-{next(_boxes)}"
        """Unique: two containers of one name share nspawn's propagation folder, and the second hangs."""

    def boot(self) -> Box:
        root = blank_root()
        NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mountpoint", "-q", str(NSPAWN_RUN)]).returncode:  # nspawn needs it to be a tmpfs
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_RUN)], check=True)
        self.upper.mkdir(parents=True, exist_ok=True)
        binds = [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        with self.console.open("ab") as console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "-D", str(root), f"--overlay={root}:{self.upper}:/", f"--machine={self.name}",
                 "--boot", "--register=no",
                 "--keep-unit", "--private-network", "--console=passive", *binds],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not self.leader:  # the box's PID 1: nspawn's child once it is in a PID namespace of its own
            children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.nspawn.pid)], capture_output=True,
                                      text=True).stdout.split()
            self.leader = next((int(pid) for pid in children if _own_pid_namespace(int(pid))), 0)
            assert self.nspawn.poll() is None, f"nspawn ended: {self.console.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.1)  # another process starting: nothing to await
        state = ""
        while state not in ("running", "degraded"):  # before its bus is up, systemctl says "offline"
            assert time.monotonic() < deadline, f"the box did not boot: {state}"
            state = self.run("systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT_S).stdout.strip()
            time.sleep(0 if state else 0.1)
        assert state == "running", self.run("systemctl", "--failed", "--no-pager").stdout
        return self

    def run(self, *command: str, timeout: float = 120, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """A command inside the box, as root, in the folder of the box's PID 1 (/); stdout and stderr
        apart. (`--wd=/` would be the host's /, opened before nsenter enters the box.)"""
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--wd", *command], capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check:
            assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def popen(self, *command: str, **kwargs: Any) -> subprocess.Popen[str]:
        """A command inside the box that runs beside the test. End it before the box shuts down:
        systemd-shutdown stops every process with SIGSTOP, nsenter outside the box then stops
        too and never reaps its child, and the shutdown waits for that zombie (90 s per round)."""
        return subprocess.Popen(["nsenter", "-t", str(self.leader), "-a", "--wd", *command], text=True,
                                start_new_session=True, **kwargs)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties), check=True).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def wait_until(self, what: str, predicate: Any, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for: {what}"
            time.sleep(0.25)  # the box's processes: nothing to await from outside but their state

    def ended(self, timeout: float) -> int:
        """Wait for the container to end by itself (poweroff, reboot); its exit status."""
        assert self.nspawn is not None
        status = self.nspawn.wait(timeout)
        self.nspawn, self.leader = None, 0
        return status

    def cut(self) -> None:
        """Pull the plug: kill -9 of the box's PID 1, which takes every process of the box with it
        (kill -9 of nspawn alone leaves the box running, orphaned). The host's page cache survives:
        this proves ordering and recovery, not fsync."""
        if self.nspawn is not None:
            if self.leader:
                try:
                    os.kill(self.leader, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.nspawn.poll() is None:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(60)
            self.nspawn, self.leader = None, 0
            # nspawn killed leaves its container's processes to die with their namespace
            self._wait_gone()

    def _wait_gone(self) -> None:
        deadline = time.monotonic() + 30
        while re.search(rf"{re.escape(str(self.upper))}", _mounts()):
            assert time.monotonic() < deadline, "the container's overlay is still mounted"
            time.sleep(0.1)

    def shutdown(self) -> None:
        """Power off cleanly; cut if it does not end within a minute."""
        if self.nspawn is None:
            return
        if not self.leader:  # it never started
            self.cut()
            return
        self.run("systemctl", "poweroff", "--no-block")
        try:
            self.ended(60)
        except subprocess.TimeoutExpired:
            self.cut()


def _own_pid_namespace(pid: int) -> bool:
    """Not yet, while nspawn's intermediate child still shares the host's (it goes away)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()
