"""`vmgateway status` and `vmgateway echo` as a technician uses them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import SAMPLES, client, new_token
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk, free_port


def vmgateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmgateway", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_subcommand() -> None:
    result = vmgateway("--help")
    assert result.returncode == 0
    for command in ("run", "status", "echo"):
        assert command in result.stdout
        assert vmgateway(command, "--help").returncode == 0


@pytest.mark.peer
def test_status_while_running_and_study_completion(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway(dicom={"stable_after_s": 1})
    files = copies_of_ct_small(tmp_path / "ct", 3)
    assert dcmtk("storescu", "-aet", "XRAY1", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), *files).returncode == 0

    arriving = json.loads(vmgateway("status", "--config", str(gateway.config), "--json").stdout)
    assert arriving["totals"]["items"] == 3
    assert arriving["today"]["items"] == 3
    assert arriving["totals"]["by_state"] == {"received": 3}
    [sender] = arriving["senders"]
    assert (sender["protocol"], sender["name"], sender["address"], sender["items"]) == ("dicom", "XRAY1", "127.0.0.1", 3)

    gateway.wait_for_log('"msg": "study complete"')
    summary = json.loads(vmgateway("status", "--config", str(gateway.config), "--json").stdout)
    assert summary["studies"]["complete"] == 1 and summary["studies"]["arriving"] == []
    [study] = summary["studies"]["recently_complete"]
    assert (study["instances"], study["modalities"], study["patient_id"]) == (3, "CT", "1CT1")

    text = vmgateway("status", "--config", str(gateway.config))
    assert text.returncode == 0
    assert "Received in all: 3 items" in text.stdout
    assert "Studies: 1 complete, 0 still arriving" in text.stdout
    assert "Not yet delivered: 3; dead (given up on, retry through the API): 0" in text.stdout
    assert "XRAY1" in text.stdout and "CompressedSamples^CT1" in text.stdout

    # who the box is: the same gateway id the API and the metrics give, made once at the first start
    box = summary["identity"]
    with client(gateway, new_token(gateway, "office")) as api:
        served = api.get("/api/v1/status").json()["identity"]
        metrics = api.get("/api/v1/metrics").text
    assert box["gateway_id"] == served["gateway_id"] and uuid.UUID(box["gateway_id"])
    assert (box["hostname"], box["version"]) == (socket.gethostname(), served["version"])
    assert box["started_at"] == pytest.approx(served["started_at"], abs=5)  # the journal's start event, the process
    assert box["releases"] == served["releases"] == {"committed": None, "previous": None, "on_trial": None,
                                                     "failed": [], "last_upgrade_at": None, "last_rollback_at": None}
    assert f'vmgateway_gateway_info{{gateway_id="{box["gateway_id"]}",hostname="{box["hostname"]}",site=""}} 1.0' in metrics
    assert "vmgateway_release_on_trial 0.0" in metrics and "vmgateway_failed_releases 0.0" in metrics
    assert f"Gateway {box['gateway_id']} on {box['hostname']}" in text.stdout and "running since" in text.stdout
    assert gateway.stop() == 0
    stopped = json.loads(vmgateway("status", "--config", str(gateway.config), "--json").stdout)["identity"]
    assert stopped["gateway_id"] == box["gateway_id"] and stopped["started_at"] is None


def test_status_without_a_journal_says_so(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "nothing"}"\n')
    result = vmgateway("status", "--config", str(config))
    assert result.returncode == 1
    assert "no journal at" in result.stderr


def test_echo_succeeds_and_says_why_it_fails(gateway: GatewayProcess) -> None:
    ok = vmgateway("echo", "127.0.0.1", str(gateway.port), "--called-aet", "VM_GATEWAY")
    assert ok.returncode == 0 and "succeeded" in ok.stdout

    rejected = vmgateway("echo", "127.0.0.1", str(gateway.port), "--called-aet", "SOMEONE_ELSE")
    assert rejected.returncode == 1
    assert rejected.stderr.strip() == (
        f"association rejected by SOMEONE_ELSE@127.0.0.1:{gateway.port} permanently: called AE title not recognised"
    )

    refused = vmgateway("echo", "127.0.0.1", str(free_port()))
    assert refused.returncode == 1
    assert "cannot connect to 127.0.0.1" in refused.stderr and "Connection refused" in refused.stderr


@pytest.mark.peer
def test_echo_against_dcmtk_storescp(tmp_path: Path) -> None:
    """Our C-ECHO SCU against a real third-party SCP (dcmtk's storescp listens on all
    interfaces, so it runs in a network namespace of its own with only loopback)."""
    port = free_port()
    script = (
        "ip link set lo up; "
        f"storescp -aet PACS -od {tmp_path} {port} >/dev/null 2>&1 & pid=$!; "
        # wait until storescp listens (bounded), then echo, then stop storescp
        f"for i in $(seq 100); do ss -ltn | grep -q ':{port} ' && break; sleep 0.05; done; "
        f"{sys.executable} -m vmgateway echo 127.0.0.1 {port} --called-aet PACS; rc=$?; kill $pid; wait $pid; exit $rc"
    )
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"C-ECHO to PACS@127.0.0.1:{port} succeeded" in result.stdout


def test_send_hl7_prints_each_ack_and_status_counts_hl7(gateway: GatewayProcess) -> None:
    samples = SAMPLES
    good = samples / "oru_r01_hematology_dog_v231.hl7"
    bad = samples / "truncated_msh.hl7"
    result = vmgateway("send-hl7", "--port", str(gateway.hl7_port), str(good), str(bad))
    assert result.returncode == 1  # one message was refused
    lines = result.stdout.splitlines()
    assert lines[0] == f"{good}: AA"
    assert lines[1].startswith(f"{bad}: AR the MSH segment is cut short")
    assert vmgateway("send-hl7", "--port", str(gateway.hl7_port), str(good)).stdout.strip() == f"{good}: AA"

    summary = json.loads(vmgateway("status", "--config", str(gateway.config), "--json").stdout)
    assert summary["totals"]["by_kind"]["hl7"]["items"] == 1  # the resent message is stored once
    [sender] = summary["senders"]
    assert (sender["protocol"], sender["name"]) == ("hl7", "HEMA-VET^LAB1")
    text = vmgateway("status", "--config", str(gateway.config)).stdout
    assert "1 HL7" in text and "HEMA-VET^LAB1" in text


def test_send_hl7_says_when_nobody_listens(tmp_path: Path) -> None:
    message = tmp_path / "m.hl7"
    message.write_bytes(b"MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5\r")
    result = vmgateway("send-hl7", "--port", str(free_port()), str(message))
    assert result.returncode == 1 and "Connection refused" in result.stderr
