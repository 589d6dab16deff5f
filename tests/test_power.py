"""Power: the gateway against a real NUT server (dummy-ups + upsd), and its drain policy."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.clients import client, new_token
from tests.support.dicomdata import copies_of_ct_small, dataset_differences
from tests.support.gateway import GatewayProcess, dcmtk
from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id
from tests.support.nut import ADMIN, ADMIN_PASSWORD, UPS, NutServer
from tests.support.storescu import hold_association, storescu_acknowledged
from vmgateway.config import PowerConfig
from vmgateway.power.monitor import PowerMonitor
from vmgateway.power.nut import NutClient, NutError
from vmgateway.power.nut import NutServer as NutAddress
from vmgateway.power.state import PowerReading, PowerState, drain_reason, read_state
from vmgateway.store import Store


@pytest.fixture
def nut() -> Iterator[NutServer]:
    server = NutServer().start()
    yield server
    server.stop()


def watching(make_gateway: Any, nut: NutServer, **power: Any) -> GatewayProcess:
    gateway: GatewayProcess = make_gateway(power={"nut_port": nut.port, "ups": UPS, "poll_interval_s": 0.2} | power)
    gateway.wait_for_log('"power": "online (OL)')
    return gateway


def change_power(gateway: GatewayProcess, nut: NutServer, status: str, expect: str) -> None:
    """Set ups.status in upsd and wait until the gateway has logged the state it means."""
    seen = len(gateway.log_lines)
    nut.set("ups.status", status)
    gateway.wait_for_log(f'"power": "{expect}', after=seen)


def events(gateway: GatewayProcess, *kinds: str) -> list[tuple[str, str]]:
    with gateway.journal() as conn:
        marks = ",".join("?" * len(kinds))
        return [(r[0], r[1]) for r in conn.execute(
            f"SELECT kind, detail FROM events WHERE kind IN ({marks}) ORDER BY id", kinds)]


def power_status(gateway: GatewayProcess, token: str) -> dict[str, Any]:
    with client(gateway, token) as api:
        status: dict[str, Any] = api.get("/api/v1/status").json()["components"]["power"]
        return status


def send_hl7(port: int, control_id: str) -> str:
    peer = Peer(port)
    try:
        peer.send(frame(with_control_id(HEMATOLOGY, control_id)))
        return msa(peer.ack())[1]
    finally:
        peer.close()


# --- what ups.status means ---

@pytest.mark.parametrize(("status", "state"), [
    ("OL", PowerState.ONLINE), ("OL CHRG", PowerState.ONLINE), ("OL CHRG LB", PowerState.ONLINE),
    ("OB DISCHRG", PowerState.ON_BATTERY), ("OB DISCHRG LB", PowerState.LOW_BATTERY),
    ("FSD OB LB", PowerState.FORCED_SHUTDOWN), ("FSD OL", PowerState.FORCED_SHUTDOWN),
    ("", PowerState.UNKNOWN), ("BYPASS", PowerState.UNKNOWN),
])
def test_ups_status_flags_fold_into_one_state(status: str, state: PowerState) -> None:
    assert read_state({"ups.status": status, "battery.charge": "80"}).state is state


def test_only_low_battery_fsd_or_short_runtime_on_battery_are_reasons_to_drain() -> None:
    def reason(status: str, runtime: str) -> str | None:
        return drain_reason(read_state({"ups.status": status, "battery.runtime": runtime}), 90)

    assert reason("OL", "10") is None  # on mains, a low runtime estimate means nothing
    assert reason("OB DISCHRG", "1800") is None
    assert reason("OB DISCHRG", "60") == "on battery with 60 s of runtime left, under power.min_runtime_s = 90"
    assert reason("OB DISCHRG LB", "1800") == "the UPS is on battery and the battery is low"
    assert reason("FSD OB", "1800") == "the UPS announced a forced shutdown (FSD)"
    assert drain_reason(PowerReading(PowerState.UNKNOWN, error="no upsd"), 90) is None
    assert drain_reason(read_state({"ups.status": "OB", "battery.runtime": "60"}), 0) is None


def test_a_single_short_runtime_reading_is_not_enough_and_mains_cancels_it(tmp_path: Path) -> None:
    """Runtime estimates dip with a load spike: two polls in a row are needed; mains in between cancels."""
    store = Store(tmp_path, 0)
    store.open()
    drains: list[str] = []
    monitor = PowerMonitor(PowerConfig(poll_interval_s=0.2, min_runtime_s=90), store, drains.append)
    script = [{"ups.status": "OB DISCHRG", "battery.runtime": "60"}, {"ups.status": "OL CHRG"},
              {"ups.status": "OB DISCHRG", "battery.runtime": "60"}, {"ups.status": "OB DISCHRG", "battery.runtime": "1500"},
              {"ups.status": "OB DISCHRG", "battery.runtime": "50"}, {"ups.status": "OB DISCHRG", "battery.runtime": "40"}]
    readings = iter(script)

    async def scripted() -> dict[str, str]:
        return next(readings)

    monitor._client.variables = scripted  # type: ignore[method-assign]
    try:
        asyncio.run(asyncio.wait_for(monitor.run(), 10))  # returns once it asks for the drain
    finally:
        store.close()
    assert drains == ["on battery with 40 s of runtime left, under power.min_runtime_s = 90"]
    assert next(readings, None) is None  # it took the whole script to get there


# --- the NUT protocol against upsd ---

@pytest.mark.peer
def test_client_reads_the_ups_and_names_each_failure(nut: NutServer) -> None:
    async def read(ups: str, port: int = nut.port) -> dict[str, str]:
        client = NutClient(NutAddress("127.0.0.1", port, ups), timeout=5)
        try:
            return await client.variables()
        finally:
            await client.close()

    variables = asyncio.run(read(UPS))
    assert variables["ups.status"] == "OL" and variables["battery.runtime.low"] == "120"

    async def read_as_user() -> dict[str, str]:
        client = NutClient(NutAddress("127.0.0.1", nut.port, UPS, ADMIN, ADMIN_PASSWORD), timeout=5)
        try:
            return await client.variables()
        finally:
            await client.close()

    assert asyncio.run(read_as_user())["ups.status"] == "OL"  # USERNAME / PASSWORD first, then LIST VAR
    with pytest.raises(NutError) as unknown_ups:
        asyncio.run(read("nosuchups"))
    assert unknown_ups.value.code == "UNKNOWN-UPS"
    nut.stop_driver()
    with pytest.raises(NutError) as driver_gone:
        asyncio.run(read(UPS))
    assert driver_gone.value.code == "DRIVER-NOT-CONNECTED"
    nut.stop_upsd()
    with pytest.raises(NutError, match="not reachable"):
        asyncio.run(read(UPS))


def test_client_refuses_an_answer_it_cannot_read() -> None:
    """A server that is not upsd (no real counterpart: a fake on purpose) gives NutError, not a crash."""
    async def scenario() -> None:
        async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(b"BEGIN LIST VAR ups\nVAR ups ups.status \"unterminated\n" + b"x" * 10000 + b"\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(junk, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(NutError):
                await NutClient(NutAddress("127.0.0.1", port, "ups"), timeout=5).variables()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_read_cancelled_just_as_upsd_answers_ends_cancelled() -> None:
    """A stop must end even when it falls on upsd's answer: Python 3.11's `asyncio.wait_for`
    returned the answer and swallowed the cancel, the UPS watch polled on, and the gateway never
    stopped after SIGTERM (seen once in a bench run)."""
    async def scenario() -> None:
        client = NutClient(NutAddress("127.0.0.1", 9, "ups"), timeout=5)
        asked, answer = asyncio.Event(), asyncio.get_running_loop().create_future()

        async def list_vars() -> dict[str, str]:
            asked.set()
            return await answer  # type: ignore[no-any-return]

        client._list_vars = list_vars  # type: ignore[method-assign]
        reading = asyncio.create_task(client.variables())
        await asyncio.wait_for(asked.wait(), 10)
        answer.set_result({"ups.status": "OL"})  # the answer arrives ...
        reading.cancel()  # ... and the stop, in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(scenario())


# --- the gateway and a real upsd ---

@pytest.mark.peer
def test_on_battery_is_reported_and_work_goes_on_then_mains_returns(make_gateway: Any, nut: NutServer,
                                                                   tmp_path: Path) -> None:
    gateway = watching(make_gateway, nut)
    token = new_token(gateway, "vetmanager")
    online = power_status(gateway, token)
    assert online | {"battery_charge_percent": 100.0, "battery_runtime_s": 1800.0} == online
    assert online["state"] == "online" and online["input_voltage"] == 230.0 and online["load_percent"] == 12.0

    change_power(gateway, nut, "OB DISCHRG", "on_battery (OB DISCHRG)")
    assert power_status(gateway, token)["state"] == "on_battery"
    with client(gateway, token) as api:
        metrics = api.get("/api/v1/metrics").text
    assert 'vmgateway_power_state{state="on_battery"} 1.0' in metrics
    assert 'vmgateway_power_state{state="online"} 0.0' in metrics
    assert "vmgateway_ups_battery_runtime_seconds 1800.0" in metrics

    files = copies_of_ct_small(tmp_path / "ct", 5)
    sent = dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files)
    assert sent.returncode == 0, sent.stdout
    assert send_hl7(gateway.hl7_port, "ON-BATTERY-1") == "AA"

    change_power(gateway, nut, "OL CHRG", "online (OL CHRG)")
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert len(gateway.instances()) == 5 and len(gateway.hl7_messages()) == 1
    assert [kind for kind, _ in events(gateway, "power", "power_drain")] == ["power", "power", "power"]
    assert [detail.split(" ")[0] for _, detail in events(gateway, "power")] == ["online", "on_battery", "online"]
    assert gateway.stop() == 0


@pytest.mark.peer
def test_low_battery_drains_under_load_and_loses_nothing(make_gateway: Any, nut: NutServer, tmp_path: Path) -> None:
    gateway = watching(make_gateway, nut, drain_timeout_s=8)  # the HL7 sender never stops on its own
    change_power(gateway, nut, "OB DISCHRG", "on_battery")
    held = hold_association(gateway.port)  # a transfer still running when the drain begins
    files = copies_of_ct_small(tmp_path / "ct", 300)
    hl7_acknowledged: list[bytes] = []

    def hl7_sender() -> None:
        try:
            peer = Peer(gateway.hl7_port)
            for number in range(100000):
                message = with_control_id(HEMATOLOGY, f"P{number:06d}")
                peer.send(frame(message))
                if msa(peer.ack())[1] == "AA":
                    hl7_acknowledged.append(message)
        except (ConnectionError, OSError):
            pass  # closed by the drain: the message in flight was not acknowledged

    sender = threading.Thread(target=hl7_sender)
    sender.start()
    seen = len(gateway.log_lines)
    dicom_acknowledged: list[Path] = []
    # storescu goes on during the drain (a running association may finish, or is aborted when the drain
    # time is up): in a thread of its own, so that what is checked during the drain does not wait for it.
    storing = threading.Thread(target=lambda: dicom_acknowledged.extend(storescu_acknowledged(
        gateway, files, after=40, on_ack=lambda: nut.set("ups.status", "OB DISCHRG LB"))))
    storing.start()
    gateway.wait_for_log("dicom receiver draining", after=seen, timeout=60)

    refused = dcmtk("echoscu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port))
    assert "Rejected Transient" in refused.stdout, refused.stdout  # come back later, not "gone"
    with pytest.raises(OSError):
        send_hl7(gateway.hl7_port, "TOO-LATE")
    last = copies_of_ct_small(tmp_path / "last", 1)[0]
    assert held.send_c_store(last).Status == 0x0000  # the running association may finish
    held.release()
    storing.join(120)
    assert gateway.proc is not None and gateway.proc.wait(30) == 0  # exits by itself, cleanly, within the drain
    wal = gateway.data_dir / "journal.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # the journal was checkpointed
    sender.join(60)
    assert len(dicom_acknowledged) >= 40 and len(hl7_acknowledged) > 0

    drain = events(gateway, "power_drain", "stop")
    assert drain[0] == ("power_drain", "the UPS is on battery and the battery is low")
    assert drain[1][1].startswith("clean (the UPS is on battery and the battery is low)")
    assert not any('"running the configured shutdown command"' in line for line in gateway.log_lines)

    nut.set("ups.status", "OL")
    gateway.start()
    rows = {row["sop_instance_uid"]: row for row in gateway.instances()}
    for path in [*dicom_acknowledged, last]:
        sent = pydicom.dcmread(path)
        row = rows[sent.SOPInstanceUID]
        stored = gateway.data_dir / "spool" / row["spool_path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]
        assert dataset_differences(sent, pydicom.dcmread(stored)) == []
    stored_hl7 = {bytes(row["data"]) for row in gateway.hl7_messages()}
    assert [m[:40] for m in hl7_acknowledged if m not in stored_hl7] == []
    assert events(gateway, "recovery") == []  # the drain was a clean stop
    assert gateway.stop() == 0


@pytest.mark.peer
def test_forced_shutdown_drains_and_runs_the_configured_shutdown_command(make_gateway: Any, nut: NutServer,
                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "host-shutdown-requested"
    gateway = watching(make_gateway, nut, shutdown_command=[sys.executable, "-c",
                                                            f"open({str(marker)!r}, 'w').write('down')"])
    nut.set("ups.status", "FSD OL")
    assert gateway.proc is not None and gateway.proc.wait(60) == 0
    assert events(gateway, "power_drain") == [("power_drain", "the UPS announced a forced shutdown (FSD)")]
    assert marker.read_text() == "down"


@pytest.mark.peer
def test_runtime_under_the_minimum_drains(make_gateway: Any, nut: NutServer) -> None:
    gateway = watching(make_gateway, nut, min_runtime_s=300)
    change_power(gateway, nut, "OB DISCHRG", "on_battery")
    nut.set("battery.runtime", "200")
    assert gateway.proc is not None and gateway.proc.wait(60) == 0
    assert events(gateway, "power_drain") == [
        ("power_drain", "on battery with 200 s of runtime left, under power.min_runtime_s = 300")]


@pytest.mark.peer
def test_without_upsd_the_state_is_unknown_and_nothing_stops(make_gateway: Any, nut: NutServer,
                                                            tmp_path: Path) -> None:
    gateway = watching(make_gateway, nut)
    token = new_token(gateway, "vetmanager")
    files = copies_of_ct_small(tmp_path / "ct", 2)

    seen = len(gateway.log_lines)
    nut.stop_driver()
    gateway.wait_for_log('"power": "unknown: upsd: DRIVER-NOT-CONNECTED', after=seen)
    assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), files[0]).returncode == 0

    seen = len(gateway.log_lines)
    nut.stop_upsd()
    gateway.wait_for_log("not reachable", after=seen)
    status = power_status(gateway, token)
    assert status["state"] == "unknown" and "not reachable" in status["error"]
    assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), files[1]).returncode == 0
    assert send_hl7(gateway.hl7_port, "NO-UPS") == "AA"
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert events(gateway, "power_drain") == []
    assert gateway.stop() == 0
