"""Hostile networks: on every port, one client cannot take memory, connections, descriptors or
time away from everyone else. Each attack runs against a running gateway while a legitimate
sender on the same port is served; attackers come from other loopback addresses (127.0.0.2…),
as a misbehaving device would from its own address. Nothing here depends on which DICOM engine
serves port 4006: the attacks are raw bytes, the legitimate senders are dcmtk and plain sockets.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.support.clients import in_process_api
from tests.support.dicomdata import copies_of_ct_small, secondary_capture
from tests.support.gateway import GatewayProcess, dcmtk, peak_rss_mb
from tests.support.hl7_peer import HEMATOLOGY, frame, msa, with_control_id
from tests.support.storescu import send_as_it_is
from vmgateway.hl7.messages import read_header
from vmgateway.model import Sender

VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LITTLE = b"1.2.840.10008.1.2"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(called: bytes = b"VM_GATEWAY", calling: bytes = b"ATTACKER") -> bytes:
    """An A-ASSOCIATE-RQ for Verification (PS3.8 9.3.2), made by hand: the attacks need its bytes."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_LITTLE)
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4")
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def closed_by_gateway(sock: socket.socket, within_s: float) -> bool:
    """Whether the gateway closes `sock` within `within_s` (whatever it sent before closing)."""
    deadline = time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def until(condition: Callable[[], bool], within_s: float) -> bool:
    """Whether `condition` holds within `within_s`, asked every 0.1 s (for what has no event to
    wait on: a count of the gateway's descriptors in /proc)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def echo_works(gateway: GatewayProcess) -> bool:
    return dcmtk("echoscu", "-to", "10", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), timeout=30).returncode == 0


def hl7_works(gateway: GatewayProcess, control_id: str) -> bool:
    with connect(gateway.hl7_port) as instrument:
        instrument.sendall(frame(with_control_id(HEMATOLOGY, control_id)))
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = instrument.recv(65536)
            if not chunk:
                return False
            answer += chunk
    return msa(answer.strip(b"\x0b\x1c\r"))[1] == "AA"


def api_works(gateway: GatewayProcess) -> bool:
    return httpx.get(f"https://127.0.0.1:{gateway.api_port}/api/v1/health", verify=False, timeout=10).status_code == 200


@contextmanager
def many_descriptors(count: int) -> Iterator[None]:
    """Let this process (and the gateway it starts) open `count` descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"the hard limit of open files here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def trickle(sockets: list[socket.socket], data: bytes, every_s: float) -> None:
    """Send `data` a byte at a time to each socket, one byte every `every_s`, until the gateway has
    closed them all (a trickle must not count as activity) or `data` runs out."""
    for byte in data:
        for sock in sockets:
            try:
                sock.send(bytes([byte]))
            except OSError:
                pass  # closed by the gateway: what the test waits for
        if all(closed_by_gateway(sock, 0.01) for sock in sockets):
            return
        time.sleep(every_s)


def stream_zeros(sock: socket.socket, most: int) -> int:
    """Send zeros until the gateway stops taking them (or `most` bytes); how many were sent."""
    sent, chunk = 0, bytes(65536)
    sock.settimeout(5)
    try:
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    except (ConnectionError, TimeoutError):
        pass
    return sent


@pytest.mark.peer
@pytest.mark.parametrize("when", ["before the association", "after the association"])
def test_a_pdu_announcing_4_gb_is_aborted_at_its_header(make_gateway: Any, when: str) -> None:
    gateway = make_gateway()
    assert gateway.proc is not None
    before = peak_rss_mb(gateway.proc.pid)
    with connect(gateway.port, "127.0.0.2") as attacker:
        if when == "after the association":
            attacker.sendall(associate_rq())
            assert attacker.recv(1) == b"\x02"  # A-ASSOCIATE-AC
            attacker.settimeout(0.5)
            with pytest.raises(TimeoutError):
                while attacker.recv(65536):  # the rest of the A-ASSOCIATE-AC
                    pass
        attacker.sendall(struct.pack(">BBI", 4 if when == "after the association" else 1, 0, 2**32 - 1))
        sent = stream_zeros(attacker, 512 * 2**20)
        assert sent < 64 * 2**20, f"the gateway took {sent} bytes of a PDU it should have refused"
        assert closed_by_gateway(attacker, 5)
    gateway.wait_for_log("dicom PDU refused: longer than allowed")
    assert peak_rss_mb(gateway.proc.pid) - before < 30  # the high-water mark: no transient spike either
    assert echo_works(gateway)


@pytest.mark.peer
def test_a_trickled_association_request_is_cut_at_the_artim_deadline(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"acse_timeout_s": 2, "max_associations": 10, "max_associations_per_peer": 5})
    request = associate_rq()
    attackers = [connect(gateway.port, "127.0.0.2") for _ in range(11)]
    started = time.monotonic()
    try:
        for position in range(6):  # one byte every 0.3 s: each byte would reset an idle timeout
            for attacker in attackers:
                try:
                    attacker.send(request[position:position + 1])
                except OSError:
                    pass
            time.sleep(0.3)
        assert echo_works(gateway), "the legitimate modality was locked out"
        cut = [closed_by_gateway(a, max(0.1, started + 4 - time.monotonic())) for a in attackers]
        assert all(cut), f"still open after 4 s: {cut.count(False)} of 11"
    finally:
        for attacker in attackers:
            attacker.close()
    gateway.wait_for_log("dicom connection refused: over the peer's share of connections")
    gateway.wait_for_log("dicom connection cut: a PDU did not arrive in time")


@pytest.mark.peer
def test_a_trickled_pdu_after_the_association_is_cut(make_gateway: Any) -> None:
    gateway = make_gateway(dicom={"network_timeout_s": 2})
    with connect(gateway.port, "127.0.0.2") as attacker:
        attacker.sendall(associate_rq())
        assert attacker.recv(1) == b"\x02"
        started = time.monotonic()
        cut = False
        for byte in struct.pack(">BBI", 4, 0, 100) + bytes(50):  # bounded: 56 bytes at most
            try:
                attacker.send(bytes([byte]))
            except OSError:
                cut = True
                break
            if closed_by_gateway(attacker, 0.3):
                cut = True
                break
        assert cut and time.monotonic() - started < 5
    assert echo_works(gateway)


def test_hl7_shares_and_the_frame_deadline(make_gateway: Any) -> None:
    gateway = make_gateway(hl7={"max_connections_per_peer": 3, "frame_timeout_s": 2})
    attackers = [connect(gateway.hl7_port, "127.0.0.2") for _ in range(8)]
    try:
        refused = [closed_by_gateway(a, 0.5) for a in attackers]
        assert refused.count(True) == 5, refused  # over the share: closed at once
        held = [a for a, r in zip(attackers, refused, strict=True) if not r]
        assert hl7_works(gateway, "FAIR-1"), "the instrument was locked out"
        started = time.monotonic()
        trickle(held, b"\x0b" + HEMATOLOGY[:20], 0.25)  # inside a frame: each byte resets no clock
        assert all(closed_by_gateway(a, max(0.1, started + 4 - time.monotonic())) for a in held)
    finally:
        for attacker in attackers:
            attacker.close()
    gateway.wait_for_log("hl7 frame not finished in time")
    gateway.wait_for_log("hl7 connection refused: over the peer's share of connections")
    assert [row["control_id"] for row in gateway.hl7_messages()] == ["FAIR-1"]


def test_api_shares_refusals_before_tls_and_the_head_deadline(make_gateway: Any) -> None:
    gateway = make_gateway(api={"allow": ["127.0.0.3"], "max_connections_per_peer": 4, "head_timeout_s": 2})
    with connect(gateway.api_port, "127.0.0.2") as stranger:
        assert closed_by_gateway(stranger, 2)  # not allowed: closed before a byte of TLS
    crowd = [connect(gateway.api_port, "127.0.0.3") for _ in range(10)]
    try:
        assert [closed_by_gateway(c, 0.5) for c in crowd].count(True) == 6  # over the share
        assert api_works(gateway)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(connect(gateway.api_port)) as slow:
            slow.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
            started = time.monotonic()
            cut = False
            for _ in range(20):  # a header byte every 0.3 s
                try:
                    slow.sendall(b"X")
                except OSError:
                    cut = True
                    break
                if closed_by_gateway(slow, 0.3):
                    cut = True
                    break
            assert cut and time.monotonic() - started < 4
    finally:
        for connection in crowd:
            connection.close()
    gateway.wait_for_log("api connection refused: address not allowed")
    gateway.wait_for_log("api connection cut: no request within the head timeout")


@pytest.mark.peer
def test_floods_leave_descriptors_and_logs_bounded(make_gateway: Any) -> None:
    """1,500 connections from 30 addresses at every port; a second gateway with room for 1,100
    HL7 connections shows DICOM still served past descriptor 1,024 (no select())."""
    with many_descriptors(4096):
        gateway = make_gateway()
        assert gateway.proc is not None
        flood: list[socket.socket] = []
        try:
            for number in range(1500):
                port = (gateway.port, gateway.hl7_port, gateway.api_port)[number % 3]
                try:
                    flood.append(connect(port, f"127.0.0.{2 + number % 30}"))
                except OSError:
                    pass  # refused at the backlog: also fine
            assert descriptors(gateway.proc.pid) < 400, "one port used up the gateway's descriptors"
            assert echo_works(gateway) and hl7_works(gateway, "FLOOD-1") and api_works(gateway)
        finally:
            for sock in flood:
                sock.close()
        refusals = [line for line in gateway.log_lines if "connection refused" in line]
        assert 0 < len(refusals) <= 6, "refusals are said once a minute per port and reason"

        roomy = make_gateway(hl7={"max_connections": 1200, "max_connections_per_peer": 1200})
        assert roomy.proc is not None
        held = [connect(roomy.hl7_port) for _ in range(1100)]
        try:
            assert until(lambda: descriptors(roomy.proc.pid) > 1100, 20), "the gateway did not take them all"
            assert echo_works(roomy), "a DICOM association above descriptor 1,024 was refused"
        finally:
            for sock in held:
                sock.close()


@pytest.mark.parametrize("uid", ["../../../../etc/passwd", "1." + "2" * 200, "1.2/3", "1.2\x003", "1..2"])
def test_an_instance_whose_uid_is_no_uid_is_refused_and_says_why(make_gateway: Any, tmp_path: Path, uid: str) -> None:
    gateway = make_gateway()
    [path] = copies_of_ct_small(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    dataset.SOPInstanceUID = pydicom.uid.UID(uid)
    dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(uid)
    dataset.save_as(path, enforce_file_format=True)
    answer = send_as_it_is(gateway, path)
    assert answer.Status == 0xC000
    assert "SOP Instance UID is not a valid UID" in answer.ErrorComment
    assert gateway.instances() == []


def test_a_repeated_sop_instance_uid_is_refused_not_silently_replaced(make_gateway: Any, tmp_path: Path) -> None:
    gateway = make_gateway()
    [path] = copies_of_ct_small(tmp_path, 1)  # explicit VR little endian
    with path.open("ab") as file:  # a second (0008,0018), out of order, after the pixel data
        file.write(struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 8) + b"1.2.3.4\x00")
    answer = send_as_it_is(gateway, path)
    assert answer.Status == 0xC000
    assert "(0008,0018) appears more than once" in answer.ErrorComment
    assert gateway.instances() == []


def test_a_uid_kept_before_uids_were_checked_never_reaches_a_header() -> None:
    from dataclasses import replace

    from vmgateway.api.feed import _file_name
    from vmgateway.records import DicomFields

    kept = DicomFields("1.2.840.5", 1, "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1", None, None, None, None,
                       None, None, None, None, None, None, None)
    assert _file_name(7, replace(kept, sop_instance_uid="../../../../etc/passwd")) == "item-7.dcm"
    assert _file_name(8, kept) == "1.2.840.5.dcm"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB file system (tmpfs), for a disk that fills up under the gateway."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)], check=False,
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_disk_filled_by_someone_else_answers_a700_and_the_association_goes_on(
        make_gateway: Any, small_disk: Path, tmp_path: Path) -> None:
    """The watermark check passes (1 MB), then the write itself meets ENOSPC: 0xA700, not an abort."""
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification  # type: ignore[attr-defined]

    gateway = make_gateway(storage={"data_dir": str(small_disk / "var"), "min_free_mb": 1})
    big = secondary_capture(tmp_path / "big.dcm", frames=32, rows=512, columns=512)  # 8 MiB
    small = copies_of_ct_small(tmp_path / "small", 1)[0]
    filler = small_disk / "someone-else"
    filler.write_bytes(bytes(int(shutil.disk_usage(small_disk).free - 4 * 2**20)))  # 4 MB left
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", gateway.port, ae_title="VM_GATEWAY")
    assert association.is_established
    try:
        refused = association.send_c_store(pydicom.dcmread(big))
        assert refused.Status == 0xA700 and "disk" in refused.ErrorComment
        assert association.is_established and association.send_c_echo().Status == 0
        filler.unlink()  # room again: the same association stores
        assert association.send_c_store(pydicom.dcmread(small)).Status == 0
    finally:
        association.release()
    assert gateway.incoming_files() == []
    assert [row["sop_instance_uid"] for row in gateway.instances()] == [pydicom.dcmread(small).SOPInstanceUID]
    assert "No space left on device" in gateway.wait_for_log("refused: disk below watermark")


def test_the_journal_meeting_a_full_disk_answers_ae_and_commits_again_once_there_is_room(
        make_gateway: Any, small_disk: Path) -> None:
    """No watermark (storage.min_free_mb = 0) and a disk filled to the last byte by someone else:
    the journal's own SQLITE_FULL is an `AE`, shown in status, and gone once there is room."""
    from tests.support.clients import client, new_token
    from tests.support.hl7_peer import hl7_answer

    gateway = make_gateway(storage={"data_dir": str(small_disk / "var"), "min_free_mb": 0})
    token = new_token(gateway, "vetmanager")
    filler = small_disk / "someone-else"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, shutil.disk_usage(small_disk).free)  # to the last block
    finally:
        os.close(fd)
    assert shutil.disk_usage(small_disk).free == 0
    assert hl7_answer(gateway, with_control_id(HEMATOLOGY, "FULL-1")) == "AE"
    with client(gateway, token) as api:
        journal = api.get("/api/v1/status").json()["components"]["journal"]
    assert journal["state"] == "failing" and "full" in journal["last_error"], journal

    filler.unlink()
    assert hl7_answer(gateway, with_control_id(HEMATOLOGY, "FULL-2")) == "AA"
    with client(gateway, token) as api:
        assert api.get("/api/v1/status").json()["components"]["journal"]["state"] == "ok"
    assert [bytes(row["data"]).split(b"|")[9] for row in gateway.hl7_messages()] == [b"FULL-2"]


def test_astm_shares_and_a_trickled_frame(make_gateway: Any) -> None:
    from tests.support.astm_instrument import ACK, ENQ, Instrument, result_message
    from tests.support.gateway import astm_gateway, kept

    gateway, port = astm_gateway(make_gateway, frame_timeout_s=2, idle_timeout_s=3, max_connections_per_peer=2)
    attackers = [connect(port, "127.0.0.2") for _ in range(5)]
    try:
        refused = [closed_by_gateway(a, 0.5) for a in attackers]
        assert refused.count(True) == 3, refused
        held = [a for a, r in zip(attackers, refused, strict=True) if not r]
        for attacker in held:
            attacker.sendall(ENQ)
            assert attacker.recv(1) == ACK
        started = time.monotonic()
        trickle(held, b"\x021H|\\^&|||VetScan|||||||P|1\r" * 2, 0.3)  # never a whole frame
        assert all(closed_by_gateway(a, max(0.1, started + 8 - time.monotonic())) for a in held)
        instrument = Instrument("127.0.0.1", port).connect()
        try:
            assert instrument.send_message(result_message("FAIR", "VM-1"))
        finally:
            instrument.close()
    finally:
        for attacker in attackers:
            attacker.close()
    gateway.wait_for_log("astm sender silent mid-transfer")
    assert [row["sample_ids"] for row in kept(gateway)] == ["FAIR"]


UNSAYABLE = ['"\\ud800"', '"a\\udfffb"', "NaN", "Infinity", "-Infinity", "1e400", '"²"', "1" + "0" * 30, "1" * 5000,
             "-1", "1e3", '{"a.b": 1}', '"\\u0000"']
"""What JSON or an ID cannot hold, or what means nothing here: a lone surrogate, NaN and the
infinities (Python's json reads them; JSON has none), a number too large for a float, a digit
that is no ASCII digit, IDs beyond SQLite's integers, negative and exponent IDs, a dotted key."""


def test_no_route_answers_a_5xx_to_what_json_and_ids_cannot_hold(tmp_path: Path) -> None:
    """Each class sent to every route of the API, in a body's every usual place and in the path:
    4xx each time, naming the problem (165 answers were 500s once)."""
    async def probe() -> list[str]:
        failures = []
        async with in_process_api(tmp_path) as (api, _):
            assert (await api.post("/api/v1/transfers/activate")).status_code == 200
            document = (await api.get("/api/v1/openapi.json")).json()
            for path, operations in document["paths"].items():
                for method in operations:
                    for value in UNSAYABLE:
                        url = re.sub(r"\{[^}]+\}", value.strip('"')[:60].replace("\\", "\\\\"), path)
                        bodies = [value, f'{{"x": {value}}}', f'{{"item_ids": [{value}]}}',
                                  f'{{"changes": {{"site.contact": {{"name": {value}}}}}}}']
                        for body in bodies if method in ("post", "put", "patch") else [None]:
                            answer = await api.request(method, url, content=body,
                                                       headers={"content-type": "application/json"} if body else {})
                            if answer.status_code >= 500:
                                failures.append(f"{method.upper()} {url[:50]} {(body or '')[:40]}: {answer.status_code}")
        return failures

    assert asyncio.run(probe()) == []


def test_json_that_cannot_be_json_is_refused_saying_where_and_what(tmp_path: Path) -> None:
    async def send() -> list[httpx.Response]:
        async with in_process_api(tmp_path) as (api, _):
            headers = {"content-type": "application/json"}
            return [await api.post("/api/v1/transfers/retry", content=body, headers=headers)
                    for body in (b'{"item_ids": [NaN]}', b'{"item_ids": [1e400]}', b'{"x": ["ok", "\\udc00"]}')]

    not_a_number, too_large, surrogate = asyncio.run(send())
    assert [a.status_code for a in (not_a_number, too_large, surrogate)] == [422, 422, 422]
    assert not_a_number.json()["detail"][0]["msg"] == "NaN is not a JSON number"
    assert too_large.json()["detail"][0]["msg"] == "1e400 is too large for a number"
    assert surrogate.json()["detail"][0] == {"type": "value_error", "loc": ["body", "x", 1],
                                             "msg": "a lone surrogate is not a character", "input": None}


@pytest.mark.parametrize("item_id", ["-1", "1e3", "²", "1" * 30, "1" * 5000, "0"])
def test_the_pages_retry_button_retries_nothing_for_an_id_that_is_no_item(tmp_path: Path, item_id: str) -> None:
    """"-1" and "1e3" once meant "retry every dead item"; "²" and 30 digits were 500s."""
    async def press() -> tuple[int, list[int]]:
        async with in_process_api(tmp_path) as (api, store):
            raw = with_control_id(HEMATOLOGY, "DEAD-1")
            receipt = store.submit_hl7(raw, read_header(raw), Sender("hl7", "LAB^VET", "127.0.0.1")).result(10)
            assert await store.deliveries.record_refused([(receipt.item_id, "refused")], 1, {}) == [receipt.item_id]
            token = api.headers["authorization"].removeprefix("Bearer ")
            answer = await api.post("/ui/transfers/retry", content=f"item_id={item_id}",
                                    headers={"content-type": "application/x-www-form-urlencoded",
                                             "cookie": f"vmgateway_token={token}"})
            return answer.status_code, [dead.id for dead in await store.deliveries.dead_items(0, 10)]

    status, still_dead = asyncio.run(press())
    assert status == 400 and still_dead == [1]


def test_the_pages_buttons_answer_only_the_page_and_the_api_only_its_bearer_token(tmp_path: Path) -> None:
    """A form on another site posting to the page (or `text/plain` to the API) with the person's
    cookie once switched transfers; the page's answers now also carry headers that keep it from
    being framed, cached or told on."""
    async def visit() -> dict[str, Any]:
        async with in_process_api(tmp_path) as (api, store):
            token = api.headers.pop("authorization").removeprefix("Bearer ")
            cookie = {"cookie": f"vmgateway_token={token}"}
            form = cookie | {"content-type": "application/x-www-form-urlencoded"}
            seen: dict[str, Any] = {
                "sign_in": await api.get("/"),
                "foreign_origin": await api.post("/ui/transfers/activate", headers=form | {"origin": "https://evil.example"}),
                "cross_site": await api.post("/ui/transfers/activate", headers=form | {"sec-fetch-site": "cross-site"}),
                "api_by_cookie": await api.post("/api/v1/transfers/activate", content=b"{}",
                                                headers=cookie | {"content-type": "text/plain"}),
            }
            seen["still_off"] = await store.settings.transfers_active()
            seen["from_the_page"] = await api.post("/ui/transfers/activate", headers=form | {
                "origin": "http://gateway", "sec-fetch-site": "same-origin"})
            seen["now_on"] = await store.settings.transfers_active()
            return seen

    seen = asyncio.run(visit())
    assert (seen["foreign_origin"].status_code, seen["cross_site"].status_code) == (403, 403)
    assert seen["api_by_cookie"].status_code == 401 and seen["still_off"] is False
    assert seen["from_the_page"].status_code == 303 and seen["now_on"] is True
    for answer in (seen["sign_in"], seen["foreign_origin"], seen["from_the_page"]):
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "same-origin"  # nothing told to any other site
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "script-src" not in answer.headers["content-security-policy"]  # default-src 'none': no script at all
