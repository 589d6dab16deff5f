"""Power cuts: the gateway's data folder on a file system that forgets what was not fsync'ed
(tests/support/crashfs.py), cut under load, restarted, checked.

After every cut, every instance and message a sender was told succeeded is there with identical
bytes, `PRAGMA integrity_check` is ok, the spool and the journal name the same files, and nothing
is marked delivered that the upstream did not answer. A handful of seeded cuts run in CI; the long
run (README, "Reliability") is the same test with more cuts:

    VMGATEWAY_POWER_CUTS=100 VMGATEWAY_LARGE_MB=100 .venv/bin/python -m pytest tests/test_power_cuts.py -k under_load -s

And the test is shown to catch what it must: with one fsync taken out of the gateway
(tests/support/mutants.py), a single cut loses an acknowledged item.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.astm_instrument import Instrument, result_message
from tests.support.clients import client, new_token
from tests.support.crashfs import CrashFs
from tests.support.dicomdata import copies_of_ct_small, dated_today, secondary_capture
from tests.support.gateway import GatewayProcess, free_ports
from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id
from tests.support.ledger import Ledger, Load, check_after_restart
from tests.support.netns import loopback_only
from tests.support.orthanc import Orthanc
from tests.support.storescu import storescu_acknowledged
from tests.support.upstream import Upstream

CUTS = int(os.environ.get("VMGATEWAY_POWER_CUTS", "3"))
LARGE_MB = int(os.environ.get("VMGATEWAY_LARGE_MB", "12"))
SEED = int(os.environ.get("VMGATEWAY_POWER_CUT_SEED", "20261203"))


def send_hl7_until_cut(gateway: GatewayProcess, ledger: Ledger, prefix: str) -> None:
    """One connection sending results one after another until the gateway goes away."""
    try:
        peer = Peer(gateway.hl7_port)
        for number in range(100_000):
            message = with_control_id(HEMATOLOGY, f"{prefix}-{number:05d}")
            peer.send(frame(message))
            if msa(peer.ack())[1] == "AA":
                ledger.add_hl7(message)
    except OSError:  # ConnectionError included: the power went
        pass


def send_astm_until_cut(port: int, ledger: Ledger, prefix: str) -> None:
    """An analyzer sending result sets one after another until the gateway goes away."""
    instrument = Instrument("127.0.0.1", port)
    try:
        instrument.connect()
        for number in range(100_000):
            instrument.send_message(result_message(f"{prefix}-{number}", "VM-1"))
    except (OSError, AssertionError):  # the power went (an establishment unanswered included)
        pass
    finally:
        instrument.close()
        with ledger.lock:
            ledger.astm += instrument.acknowledged_messages


def poll_pacs_until_cut(gateway: GatewayProcess, token: str) -> None:
    """Vetmanager asking for PACS polls, one after another, until the gateway goes away."""
    try:
        with client(gateway, token) as api:
            for _ in range(10_000):
                api.post("/api/v1/pacs/poll", timeout=120)
    except httpx.HTTPError:
        pass


def cut_under_load(fs: CrashFs, load: Load, folder: Path, after: int, large_mb: int) -> None:
    """Three DICOM associations (one with a large instance), two HL7 connections, an ASTM analyzer,
    pushes to Orthanc (DICOMweb) and to an HL7 endpoint, PACS polls fetching a new study from
    Orthanc; the power goes after `after` instances were acknowledged on the first association."""
    gateway, ledger = load.gateway, load.ledger
    folder.mkdir(parents=True)
    load.orthanc.upload_all(dated_today(copies_of_ct_small(folder / "pacs", 20), folder / "pacs-today"))
    large = [secondary_capture(folder / "large.dcm", frames=large_mb, rows=1024, columns=1024)] if large_mb else []
    batches = [copies_of_ct_small(folder / "a", 400), large + copies_of_ct_small(folder / "b", 200),
               copies_of_ct_small(folder / "c", 200)]

    def store(files: list[Path], on_ack: Callable[[], None], after: int) -> None:
        ledger.add_dicom(storescu_acknowledged(gateway, files, on_ack=on_ack, after=after))

    def power_cut() -> None:
        fs.cut()
        gateway.kill()

    senders = [threading.Thread(target=store, args=(batches[0], power_cut, after)),
               threading.Thread(target=store, args=(batches[1], lambda: None, 0)),
               threading.Thread(target=store, args=(batches[2], lambda: None, 0)),
               threading.Thread(target=send_astm_until_cut, args=(load.astm_port, ledger, folder.name)),
               threading.Thread(target=poll_pacs_until_cut, args=(gateway, load.token))]
    senders += [threading.Thread(target=send_hl7_until_cut, args=(gateway, ledger, f"{folder.name}-{n}"))
                for n in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
        assert not sender.is_alive(), "a sender outlived the power cut"
    assert gateway.proc is not None and gateway.proc.poll() is not None, "the first association never got that far"


@pytest.fixture
def network() -> Iterator[None]:
    with loopback_only():
        yield


@pytest.mark.long
@pytest.mark.peer
def test_power_cuts_under_load_lose_nothing_acknowledged(crashfs: CrashFs, network: None, make_gateway: Any,
                                                         tmp_path: Path) -> None:
    rng = random.Random(SEED)
    dicom_port, hl7_port, api_port, astm_port, *orthanc_ports = free_ports(6)
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"gateway": ["VM_GATEWAY", "127.0.0.1", dicom_port]},
                      ports=orthanc_ports).start()
    try:
        with Upstream() as upstream:
            gateway: GatewayProcess = make_gateway(
                storage={"data_dir": str(crashfs.mountpoint)}, dicom={"port": dicom_port}, hl7={"port": hl7_port},
                api={"port": api_port},
                astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": astm_port}]},
                transfers={"mode": "push", "dicomweb_url": orthanc.dicomweb_url, "hl7_url": upstream.url,
                           "astm_url": upstream.url, "allow_plain_http": True},
                pacs={"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": "ORTHANC", "lookback_days": 1})
            token = new_token(gateway, "vetmanager")
            with client(gateway, token) as api:
                assert api.post("/api/v1/transfers/activate").status_code == 200
            load = Load(gateway, token, astm_port, orthanc, upstream)
            for cut in range(CUTS):
                cut_under_load(crashfs, load, tmp_path / f"round{cut}", rng.randrange(5, 120), LARGE_MB)
                crashfs.mount()
                check = check_after_restart(gateway, load.ledger, load)
                print(f"cut {cut + 1}/{CUTS}: acknowledged {check.acknowledged}, kept {check.kept}, "
                      f"lost {len(check.lost)}")
                assert (check.lost, check.problems) == ([], []), f"after cut {cut + 1}"
                shutil.rmtree(tmp_path / f"round{cut}")  # checked: the long run must not fill the disk
            assert gateway.stop() == 0
            with contextlib.closing(gateway.journal()) as conn:
                delivered = conn.execute("SELECT count(*) FROM items WHERE state = 'delivered'").fetchone()[0]
                fetched = conn.execute("SELECT coalesce(sum(items), 0) FROM senders WHERE protocol = 'pacs'").fetchone()[0]
            assert delivered and fetched, "pushes and PACS polls were part of the load"
    finally:
        orthanc.remove()
    ledger = load.ledger
    assert len(ledger.checked) > CUTS * 5 and ledger.hl7 and ledger.astm, "the load did not reach the gateway"
    print(f"{CUTS} power cuts: {len(ledger.checked)} DICOM instances, {len(ledger.hl7)} HL7 and {len(ledger.astm)} "
          f"ASTM messages acknowledged; lost 0")


@pytest.mark.peer
@pytest.mark.parametrize("mutant", ["spool_directory_fsync", "spool_file_fsync", "journal_synchronous_normal"])
def test_with_one_fsync_taken_out_a_power_cut_loses_an_acknowledged_item(
        crashfs: CrashFs, make_gateway: Any, tmp_path: Path, mutant: str) -> None:
    gateway: GatewayProcess = make_gateway(start=False, storage={"data_dir": str(crashfs.mountpoint)})
    gateway.program = ["-m", "tests.support.mutants", mutant]
    gateway.start()
    ledger = Ledger()

    def power_cut() -> None:
        crashfs.cut()
        gateway.kill()

    ledger.add_dicom(storescu_acknowledged(gateway, copies_of_ct_small(tmp_path / "ct", 100),
                                            on_ack=power_cut, after=30))
    crashfs.mount()
    check = check_after_restart(gateway, ledger)
    assert check.lost, f"{mutant}: nothing lost of {check.acknowledged} acknowledged — the test would prove nothing"
    missing = [row["item_id"] for row in gateway.instances()
               if not (gateway.data_dir / "spool" / row["spool_path"]).is_file()]
    assert bool(missing) == (mutant == "spool_directory_fsync")
    with client(gateway, new_token(gateway, "vetmanager")) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
        for item_id in missing[:3]:  # the journal names a file the disk lost: a clear answer, never a 500
            answer = api.get(f"/api/v1/items/{item_id}/content")
            assert answer.status_code == 410 and f"item {item_id}:" in answer.json()["detail"], answer.text
