"""The gateway as the tests run it: `vmgateway run` as a subprocess on 127.0.0.1 with a
configuration of its own, the ports each pytest picks from, and dcmtk's clients."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 20


# dcmtk 3.6.7 keeps Nagle's algorithm on unless told otherwise: every small PDU would wait
# for a delayed ACK and the tests would crawl at ~10 instances/s.
DCMTK_ENV = os.environ | {"TCP_NODELAY": "1"}


PORTS = os.environ.get("VMGATEWAY_TEST_PORTS", "20000-29999")
"""The ports this pytest picks from: below the kernel's ephemeral range (32768–60999), so no
connection's own port is ever handed out here, and disjoint between the pytests the test command
runs side by side (scripts/setup.sh), so none can take another's port between choosing and binding."""


_next_port = itertools.count(random.randrange(10_000))


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free now, taken in turn from this pytest's range (PORTS):
    each is held open while the others are chosen, and none is handed out twice in a run."""
    low, high = map(int, PORTS.split("-"))
    chosen: list[socket.socket] = []
    try:
        for _ in range(high - low + 1):
            if len(chosen) == count:
                break
            port = low + next(_next_port) % (high - low + 1)
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # in use (by an earlier test's server, or anything else): the next one
                continue
            chosen.append(sock)
        if len(chosen) < count:
            raise RuntimeError(f"no {count} free ports in {PORTS}")
        return [int(sock.getsockname()[1]) for sock in chosen]
    finally:
        for sock in chosen:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def dcmtk(*args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool; its output (stdout+stderr) is in `.stdout`."""
    return subprocess.run(
        [str(a) for a in args], env=DCMTK_ENV, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class GatewayProcess:
    """A `vmgateway run` child process; its JSON log lines are collected as they come."""

    config: Path
    data_dir: Path
    port: int
    hl7_port: int
    api_port: int
    ae_title: str = "VM_GATEWAY"
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Added to the child's environment (e.g. NOTIFY_SOCKET)."""
    program: list[str] = field(default_factory=lambda: ["-m", "vmgateway"])
    """What the Python interpreter runs (tests.support.mutants: the gateway with one fsync taken out)."""
    log_lines: list[str] = field(default_factory=list)
    _running: threading.Event = field(default_factory=threading.Event)
    _new_line: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def start(self) -> None:
        self._running.clear()
        self.proc = subprocess.Popen(
            [sys.executable, *self.program, "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ | self.env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._running.wait(START_TIMEOUT_S):
            self.kill()
            raise AssertionError("gateway did not start:\n" + "\n".join(self.log_lines))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._new_line:
                self.log_lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
            if '"gateway running"' in line:
                self._running.set()

    def wait_for_log(self, text: str, timeout: float = 30, after: int = 0) -> str:
        """The first log line containing `text` (from line `after` on), waiting for it to be written."""
        with self._new_line:
            found = self._new_line.wait_for(
                lambda: next((line for line in self.log_lines[after:] if text in line), None), timeout)
        if not found:
            raise AssertionError(f"no log line with {text!r} within {timeout} s:\n" + "\n".join(self.log_lines))
        return found

    def wait_until(self, condition: Callable[[list[str]], bool], what: str, timeout: float = 60) -> None:
        """Wait until `condition(log_lines)` holds, re-checked as each line is written."""
        with self._new_line:
            if not self._new_line.wait_for(lambda: condition(self.log_lines), timeout):
                raise AssertionError(f"{what}: not within {timeout} s:\n" + "\n".join(self.log_lines[-40:]))

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the gateway drains and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        """kill -9: no chance to clean up, as in a crash or power loss."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader:
            self._reader.join(5)

    def journal(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data_dir / "journal.sqlite")
        conn.row_factory = sqlite3.Row
        return conn

    def instances(self) -> list[sqlite3.Row]:
        with contextlib.closing(self.journal()) as conn:  # closed now, not at a garbage collection
            return conn.execute(
                "SELECT * FROM items i JOIN dicom_instances d ON d.item_id = i.id ORDER BY i.id"
            ).fetchall()

    def hl7_messages(self) -> list[sqlite3.Row]:
        with contextlib.closing(self.journal()) as conn:  # closed now, not at a garbage collection
            return conn.execute(
                "SELECT * FROM items i JOIN hl7_messages h ON h.item_id = i.id JOIN payloads p ON p.item_id = i.id"
                " ORDER BY i.id"
            ).fetchall()

    def spool_files(self) -> list[Path]:
        return sorted(p for p in (self.data_dir / "spool" / "dicom").rglob("*") if p.is_file())

    def incoming_files(self) -> list[Path]:
        return sorted((self.data_dir / "spool" / "incoming").iterdir())


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key}")


def peak_rss_mb(pid: int) -> float:
    """The most memory the process has held so far (VmHWM)."""
    return _status_mb(pid, "VmHWM")


def resident_mb(pid: int) -> float:
    """The memory the process holds now (VmRSS)."""
    return _status_mb(pid, "VmRSS")


def astm_gateway(make_gateway: Any, **astm: Any) -> tuple[GatewayProcess, int]:
    (port,) = free_ports(1)
    gateway: GatewayProcess = make_gateway(astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": port}]}
                                           | astm)
    return gateway, port


def kept(gateway: GatewayProcess) -> list[dict[str, Any]]:
    with gateway.journal() as conn:
        rows = conn.execute("SELECT i.id, i.sender, p.data, a.* FROM items i JOIN payloads p ON p.item_id = i.id"
                            " JOIN astm_messages a ON a.item_id = i.id ORDER BY i.id").fetchall()
    return [dict(row) for row in rows]
