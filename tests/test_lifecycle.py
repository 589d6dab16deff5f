"""Service lifecycle: systemd's notify protocol and unit file, start-up after a crash, one gateway per
data folder, a stop that no API client can hold up."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk
from vmgateway.host.systemd import Notifier

WATCHDOG_USEC = 100_000


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        yield sock, path


def messages(sock: socket.socket) -> Iterator[set[str]]:
    """Each datagram as its set of assignments; socket.timeout ends the test if none comes."""
    while True:
        yield set(sock.recv(4096).decode().split("\n"))


def test_ready_watchdog_and_stopping_reach_systemd(make_gateway: Any, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    gateway: GatewayProcess = make_gateway(start=False)
    gateway.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    gateway.start()
    received = messages(sock)
    first = next(received)
    assert {"READY=1", "STATUS=receiving"} <= first or first == {"WATCHDOG=1"}
    while "READY=1" not in first:
        first = next(received)
    for port in (gateway.port, gateway.hl7_port, gateway.api_port):  # READY means every listener is up
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    pings = 0
    for message in received:  # the watchdog keeps coming from the running event loop
        assert message == {"WATCHDOG=1"}
        pings += 1
        if pings == 5:
            break
    assert gateway.proc is not None
    gateway.proc.terminate()
    for message in received:
        if "STOPPING=1" in message:
            assert "STATUS=draining: stop requested" in message
            break
        assert message == {"WATCHDOG=1"}
    assert gateway.proc.wait(30) == 0


def test_notifier_speaks_to_abstract_sockets_and_only_pings_for_its_own_pid() -> None:
    name = f"vmgateway-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        notifier.ready("receiving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=receiving"
    assert notifier.watchdog_interval_s == 2.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    Notifier({}).ready("receiving")  # outside systemd: nothing to do, nothing raised


def test_the_unit_file_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "vmgateway.service"
    made = subprocess.run(
        [sys.executable, "-m", "vmgateway", "host", "unit", "--executable", str(Path(sys.executable).parent / "vmgateway")],
        capture_output=True, text=True, timeout=60, check=True)
    unit.write_text(made.stdout)
    for line in ("Type=notify", "WatchdogSec=30", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "StateDirectory=vmgateway", "CapabilityBoundingSet=", "TimeoutStopSec=60"):
        assert line in made.stdout.splitlines()
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert str(unit) not in verified.stderr, verified.stderr  # warnings (unknown keys, …) name the file


@pytest.mark.peer
def test_startup_after_a_crash_reports_what_it_found(make_gateway: Any, tmp_path: Path) -> None:
    gateway: GatewayProcess = make_gateway()
    files = copies_of_ct_small(tmp_path / "ct", 3)
    assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files).returncode == 0
    gateway.kill()
    rows = gateway.instances()
    lost = gateway.data_dir / "spool" / rows[0]["spool_path"]
    lost.unlink()  # acknowledged, then gone (disk trouble, a person's mistake)
    (gateway.data_dir / "spool" / "incoming" / "tmp-partial").write_bytes(b"half")
    unrecorded = gateway.data_dir / "spool" / "dicom" / "00" / ("00" * 32 + ".dcm")
    unrecorded.write_bytes(b"renamed but never committed")

    gateway.start()
    line = gateway.wait_for_log("recorded items are missing their files")
    assert f"item {rows[0]['id']} ({rows[0]['spool_path']})" in line
    with gateway.journal() as conn:
        recovery = [r[0] for r in conn.execute("SELECT detail FROM events WHERE kind = 'recovery'")]
    assert recovery == [
        "the previous run did not stop cleanly; 1 partial and 1 unrecorded file(s) removed (never acknowledged:"
        f" their senders kept them); 1 recorded item(s) without their file; missing: item {rows[0]['id']}"
        f" ({rows[0]['spool_path']})"
    ]
    assert not unrecorded.exists() and gateway.incoming_files() == []
    assert len(gateway.instances()) == 3  # the record of the lost file stays: it is reported, not forgotten
    assert gateway.stop() == 0

    gateway.start()  # after a clean stop there is nothing to report
    assert gateway.stop() == 0
    with gateway.journal() as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE kind = 'recovery'").fetchone()[0] == 1


def test_a_second_gateway_on_the_same_data_folder_stops_before_touching_it(gateway: GatewayProcess) -> None:
    partial = gateway.data_dir / "spool" / "incoming" / "tmp-being-received"
    partial.write_bytes(b"an association is writing this")  # what start-up recovery would remove
    with gateway.journal() as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    second = subprocess.run([sys.executable, "-m", "vmgateway", "run", "--config", str(gateway.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"is in use by another gateway (process {gateway.proc.pid})" in second.stderr  # type: ignore[union-attr]
    assert partial.read_bytes() == b"an association is writing this"
    with gateway.journal() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == events  # no false start or recovery
    assert gateway.stop() == 0
    gateway.start()  # the lock went with the process that held it
    assert gateway.stop() == 0


def test_an_idle_keep_alive_api_client_does_not_hold_the_stop(make_gateway: Any) -> None:
    """A TLS client that keeps its connection open once held every stop for 30 s (asyncio
    waits that long for its close_notify); the stop must end within the drain plus 5 s."""
    drain_s = 3
    gateway: GatewayProcess = make_gateway(dicom={"drain_timeout_s": drain_s}, hl7={"drain_timeout_s": drain_s})
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", gateway.api_port), timeout=10)) as idle:
        idle.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert idle.recv(100).startswith(b"HTTP/1.1 200")  # served, and the connection kept alive
        began = time.monotonic()
        assert gateway.stop(timeout=60) == 0
        assert time.monotonic() - began < drain_s + 5
    gateway.wait_for_log("api connections cut at stop")
