"""The invariant, proven with kill -9 and SIGTERM: an acknowledgement is a promise."""

from __future__ import annotations

import hashlib
import signal
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.dicomdata import copies_of_ct_small, dataset_differences
from tests.support.gateway import GatewayProcess, dcmtk
from tests.support.storescu import hold_association, storescu_acknowledged


@pytest.mark.peer
def test_kill_9_loses_nothing_acknowledged(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway()
    files = copies_of_ct_small(tmp_path / "ct", 400)
    acknowledged = storescu_acknowledged(gateway, files, on_ack=gateway.kill, after=60)
    assert 60 <= len(acknowledged) < len(files), "the kill did not land in the middle of the run"

    gateway.start()  # same configuration, same data folder
    rows = {row["sop_instance_uid"]: row for row in gateway.instances()}
    for path in acknowledged:
        sent = pydicom.dcmread(path)
        row = rows.get(sent.SOPInstanceUID)
        assert row is not None, f"{path.name} was acknowledged but is not in the journal"
        stored_path = gateway.data_dir / "spool" / row["spool_path"]
        assert hashlib.sha256(stored_path.read_bytes()).hexdigest() == row["sha256"]
        assert dataset_differences(sent, pydicom.dcmread(stored_path)) == []
    # Whatever the journal has is intact, and nothing half-written is visible as an instance.
    for row in rows.values():
        stored_path = gateway.data_dir / "spool" / row["spool_path"]
        assert hashlib.sha256(stored_path.read_bytes()).hexdigest() == row["sha256"]
    assert gateway.incoming_files() == []
    assert len(gateway.spool_files()) == len(rows)  # no orphan either
    assert gateway.stop() == 0


@pytest.mark.peer
def test_sigterm_refuses_new_associations_and_lets_running_ones_finish(gateway: GatewayProcess, tmp_path: Path) -> None:
    running = hold_association(gateway.port)
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.wait_for_log("dicom receiver draining")

    refused = dcmtk("echoscu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port))
    assert refused.returncode != 0
    assert "Rejected Transient" in refused.stdout and "Local Limit Exceeded" in refused.stdout

    late = copies_of_ct_small(tmp_path / "late", 1)[0]
    assert running.send_c_store(late).Status == 0x0000  # the running association still works
    running.release()
    assert gateway.proc.wait(30) == 0
    assert [r["sop_instance_uid"] for r in gateway.instances()] == [pydicom.dcmread(late).SOPInstanceUID]
    with gateway.journal() as conn:
        kinds = [tuple(r) for r in conn.execute("SELECT kind, detail FROM events ORDER BY id")]
    assert kinds[0][0] == "start"
    assert kinds[-1] == ("stop", "clean (stop requested); 0 association(s) aborted")


def test_sigterm_aborts_associations_that_outlast_the_drain_timeout(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"drain_timeout_s": 1})
    idle = hold_association(gateway.port)
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(30) == 0
    gateway.wait_for_log('"aborted_associations": 1')
    assert not idle.is_established


@pytest.mark.peer
def test_a_drain_starts_no_new_upload_and_rejects_associations_until_the_process_exits(make_gateway: Any) -> None:
    """A drain only lets what runs finish: with one upload under way and another item waiting, the
    second is never started; the DICOM port, with no association to wait for, keeps answering
    A-ASSOCIATE-RJ (transient) instead of closing while the upload finishes."""
    from tests.support.push import journal_states, pushing_hl7, send
    from tests.support.upstream import Step, Upstream

    release = threading.Event()
    with Upstream(default=Step(200, hold=release)) as upstream:
        gateway, _ = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, concurrency=1, timeout_s=60)
        send(gateway, "DRAIN-1", "DRAIN-2")
        upstream.wait_for(1)  # the first upload is under way, held by the upstream
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.wait_for_log('"aborted_associations": 0')
        try:
            refused = dcmtk("echoscu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port))
        finally:
            release.set()
        assert gateway.proc.wait(60) == 0
        assert len(upstream.received) == 1, "an upload was started during the drain"
    assert refused.returncode != 0 and "Rejected Transient" in refused.stdout, refused.stdout
    assert journal_states(gateway) == {"delivered": 1, "received": 1}  # the second waits for the next start


def test_kill_9_loses_no_acknowledged_hl7_message(make_gateway: Any) -> None:
    from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id

    gateway = make_gateway()
    peer = Peer(gateway.hl7_port)
    acknowledged: list[bytes] = []
    enough = threading.Event()
    killer = threading.Thread(target=lambda: enough.wait(60) and gateway.kill())
    killer.start()  # kills from another thread, wherever the stream happens to be
    try:
        for number in range(5000):
            message = with_control_id(HEMATOLOGY, f"K{number:05d}")
            peer.send(frame(message))
            if msa(peer.ack())[1] == "AA":
                acknowledged.append(message)
            if len(acknowledged) == 150:
                enough.set()
    except (ConnectionError, OSError):
        pass  # the gateway died under the sender, as it should have
    killer.join(60)
    assert 150 <= len(acknowledged) < 5000

    gateway.start()
    stored = {bytes(row["data"]) for row in gateway.hl7_messages()}
    missing = [m[:60] for m in acknowledged if m not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    assert gateway.stop() == 0
    # Details the kill interrupted were read after the restart.
    assert all(row["details_read"] == 1 for row in gateway.hl7_messages())


def test_sigterm_lets_an_hl7_sender_finish_then_stops(make_gateway: Any) -> None:
    from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id

    gateway = make_gateway(hl7={"drain_timeout_s": 2})
    peer = Peer(gateway.hl7_port)
    peer.send(frame(with_control_id(HEMATOLOGY, "BEFORE")))
    assert msa(peer.ack())[1] == "AA"
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.wait_for_log("gateway stopping")
    peer.send(frame(with_control_id(HEMATOLOGY, "DURING")))  # the open connection is still served
    assert msa(peer.ack())[1] == "AA"
    assert peer.closed_by_gateway()  # closed when the drain time is up
    assert gateway.proc.wait(30) == 0
    assert [r["control_id"] for r in gateway.hl7_messages()] == ["BEFORE", "DURING"]


def test_a_connection_that_never_associates_does_not_hold_the_drain(make_gateway: Any) -> None:
    """A port scan or a peer that hung up before its A-ASSOCIATE-RQ has nothing in flight: the
    drain must not wait the ACSE timeout (here 60 s, drain timeout 30 s) for it."""
    import socket

    gateway = make_gateway(dicom={"acse_timeout_s": 60, "drain_timeout_s": 30})
    silent = socket.create_connection(("127.0.0.1", gateway.port))
    try:
        gateway.wait_for_log('"msg": "gateway running"')
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(10) == 0
    finally:
        silent.close()
    gateway.wait_for_log('"running_associations": 0')
    gateway.wait_for_log('"aborted_associations": 0')
