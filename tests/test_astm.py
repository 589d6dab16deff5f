"""ASTM E1381/E1394 over TCP: a simulated instrument against `vmgateway run`."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import hl7

from tests.support.astm_instrument import ACK, EOT, NAK, Instrument, PtyMaster, result_message
from tests.support.clients import client, new_token
from tests.support.gateway import astm_gateway, kept
from tests.support.upstream import Step, Upstream
from vmgateway.astm.host_query import HostQuery, read_query
from vmgateway.astm.link import ETB, ETX, LinkReceiver, Message, Reply, checksum
from vmgateway.astm.receiver import SERIAL_RETRY_S
from vmgateway.astm.records import Delimiters, parse, summarise
from vmgateway.dicom.echo import echo


def test_a_result_message_is_kept_whole_with_what_it_says(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    records = result_message("SAMPLE-9", "VM-4711", results=5, comment_length=600)  # a record over 240 characters
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        assert instrument.send_message(records)
    finally:
        instrument.close()
    (row,) = kept(gateway)
    assert bytes(row["data"]) == b"".join(record + b"\r" for record in records)  # the 3 frames of C joined
    assert (row["instrument"], row["sample_ids"], row["patient_ids"], row["result_count"]) == (
        "VetScan VS2", "SAMPLE-9", "VM-4711", 5)
    assert row["test_codes"] == "ALB ALP GLU BUN CRE" and row["sender"] == "vetscan"
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        api.post("/api/v1/transfers/activate")
        (item,) = api.get("/api/v1/feed", params={"after": 0}).json()["items"]
        assert item["kind"] == "astm" and item["astm"]["sample_ids"] == "SAMPLE-9"
        assert api.get(f"/api/v1/items/{item['id']}/content").content == bytes(row["data"])


def test_checksum_errors_and_lost_acks_cost_nothing_and_keep_nothing_twice(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    records = result_message("S-2", "VM-2")
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        # frame 2 arrives damaged once (NAK, resent); frame 3's ACK is "lost" (the same frame comes again)
        assert instrument.send_message(records, lambda n: {"corrupt_first": n == 1, "resend_after_ack": n == 2})
        assert instrument.naks == 1
        # the final frame's ACK lost: resent, ACKed again, kept once
        last = len(records) - 1
        assert instrument.send_message(result_message("S-3", "VM-3"), lambda n: {"resend_after_ack": n == last})
    finally:
        instrument.close()
    assert [row["sample_ids"] for row in kept(gateway)] == ["S-2", "S-3"]
    assert bytes(kept(gateway)[0]["data"]) == b"".join(record + b"\r" for record in records)


def test_a_sender_that_stops_mid_message_leaves_nothing_and_the_next_message_goes_through(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway, frame_timeout_s=1)
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        assert not instrument.send_message(result_message("HALF", "VM-5"), stop_after=3)  # EOT after 3 frames
        # silent in the middle of a transfer: after frame_timeout_s the link is idle again
        assert instrument.establish() == ACK
        assert instrument.send_frame(1, b"H|\\^&|||VetScan\r", True) == ACK
        gateway.wait_for_log("astm sender silent mid-transfer")
        assert instrument.send_message(result_message("WHOLE", "VM-6"))
    finally:
        instrument.close()
    assert [row["sample_ids"] for row in kept(gateway)] == ["WHOLE"]


def test_junk_on_the_port_changes_nothing(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as junk:
        junk.sendall(b"GET / HTTP/1.1\r\n\r\n\x00\xff" * 100)
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        assert instrument.establish() == ACK
        instrument.sock.sendall(b"\x02garbage without an end" + b"\x02" + b"9bad\x03ZZ\r\n")
        assert instrument.reply() == NAK
        instrument.sock.sendall(EOT)
        assert instrument.send_message(result_message("AFTER-JUNK", "VM-7"))
    finally:
        instrument.close()
    assert [row["sample_ids"] for row in kept(gateway)] == ["AFTER-JUNK"]


def test_no_room_means_no_establishment(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    gateway.stop()
    full = make_gateway(storage={"min_free_mb": 2**40},
                        astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": port}]})
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        assert instrument.establish() == NAK  # busy: the instrument keeps its results and tries later
    finally:
        instrument.close()
    assert kept(full) == []


def test_kill_9_mid_stream_loses_nothing_acknowledged(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    instrument = Instrument("127.0.0.1", port, timeout=5).connect()
    sent = threading.Event()

    def stream() -> None:
        try:
            for number in range(10_000):
                instrument.send_message(result_message(f"K-{number}", f"VM-{number}"))
                if number == 20:
                    sent.set()
        except (OSError, ConnectionError, AssertionError):
            pass
        finally:
            sent.set()

    sender = threading.Thread(target=stream)
    sender.start()
    assert sent.wait(60)
    gateway.kill()
    sender.join(30)
    instrument.close()
    promised = {message.split(b"O|1|")[1].split(b"|")[0].decode() for message in instrument.acknowledged_messages}
    assert len(promised) > 20
    gateway.start()
    assert promised <= {row["sample_ids"] for row in kept(gateway)}


def test_the_link_state_machine_frame_by_frame() -> None:
    """Direct checks of astm/link.py where a socket would hide the detail."""
    link = LinkReceiver()
    assert link.feed(b"\x05") == [Reply(ACK)]
    body = b"1H|\\^&\r" + ETX
    assert link.feed(b"\x02" + body + checksum(body) + b"\r\n") == [Reply(ACK)]
    body = b"2L|1|N\r" + ETX
    events = link.feed(b"\x02" + body + checksum(body) + b"\r\n")
    assert events == [Message(b"H|\\^&\rL|1|N\r")]  # no reply yet: the message is not stored yet
    assert link.answered(False) == [Reply(NAK)]  # not stored: the final frame is NAKed ...
    events = link.feed(b"\x02" + body + checksum(body) + b"\r\n")  # ... and comes again
    assert events == [Message(b"H|\\^&\rL|1|N\r")]
    assert link.answered(True) == [Reply(ACK)]
    assert link.feed(EOT) == [] and not link.in_transfer
    body = b"1x" + ETB
    assert link.feed(b"\x05\x02" + body + b"00\r\n")[1] == Reply(NAK)  # checksum


def test_pushed_like_the_others(make_gateway: Any) -> None:
    with Upstream(default=Step(201)) as upstream:
        gateway, port = astm_gateway(make_gateway)
        gateway.stop()
        gateway = make_gateway(astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": port}]},
                               transfers={"mode": "push", "astm_url": upstream.url.replace("/hl7", "/astm"),
                                          "allow_plain_http": True})
        token = new_token(gateway, "vetmanager")
        with client(gateway, token) as api:
            api.post("/api/v1/transfers/activate")
        records = result_message("PUSHED", "VM-8")
        instrument = Instrument("127.0.0.1", port).connect()
        try:
            assert instrument.send_message(records)
        finally:
            instrument.close()
        (request,) = upstream.wait_for(1)
    assert request.path == "/astm" and request.body == b"".join(record + b"\r" for record in records)
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["content-type"] == "application/octet-stream" and headers["idempotency-key"].endswith(":1")
    assert (headers["x-vmgateway-instrument"], headers["x-vmgateway-sample-ids"], headers["x-vmgateway-listener"]) == (
        "VetScan VS2", "PUSHED", "vetscan")
    gateway.wait_until(lambda lines: any('"delivered"' in line and "astm" in line for line in lines), "delivery")


def test_a_result_message_as_hl7_oru(make_gateway: Any) -> None:
    gateway, port = astm_gateway(make_gateway)
    records = result_message("SAMPLE-H", "VM-9", results=3)
    records.insert(-1, b"C|1|I|hemolysed ~ slightly^see note|G")  # "~" is free in ASTM, HL7's repetition
    records[4] = b"R|2|^^^ALP|88|U/L|20 to 150|H||F||||20261127101400"  # a high flag
    instrument = Instrument("127.0.0.1", port).connect()
    try:
        assert instrument.send_message(records)
    finally:
        instrument.close()
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        api.post("/api/v1/transfers/activate")
        (item,) = api.get("/api/v1/feed", params={"after": 0}).json()["items"]
        answer = api.get(f"/api/v1/items/{item['id']}/hl7")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("x-application/hl7-v2+er7")
    message = hl7.parse(answer.text)
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(message.segment("MSH")[3]) == "VetScan"
    pid = message.segment("PID")
    assert str(pid[3]) == "VM-9^^^^PI" and str(pid[5]) == "Fido^Berg" and str(pid[7]) == "20190401"
    obr = message.segment("OBR")
    assert (str(obr[2]), str(obr[4])) == ("SAMPLE-H", "^^^COMPREHENSIVE")
    obx = [segment for segment in message if str(segment[0]) == "OBX"]
    assert [(str(s[2]), str(s[3]), str(s[5]), str(s[6]), str(s[8])) for s in obx] == [
        ("NM", "^^^ALB", "31", "g/L", "N"), ("NM", "^^^ALP", "88", "U/L", "H"), ("NM", "^^^GLU", "5.5", "mmol/L", "N")]
    (nte,) = [segment for segment in message if str(segment[0]) == "NTE"]
    assert str(nte[3]) == "hemolysed \\R\\ slightly^see note"  # "~" escaped, ASTM's components kept as HL7's


def test_an_instrument_on_a_serial_port(make_gateway: Any) -> None:
    pty = PtyMaster()
    try:
        gateway = make_gateway(astm={"serial": [{"name": "horiba", "device": pty.device, "baudrate": 9600}]})
        instrument = Instrument("", 0, sock=pty)
        assert instrument.send_message(result_message("SERIAL-1", "VM-10"),
                                       lambda n: {"corrupt_first": n == 1, "resend_after_ack": n == 3})
        assert instrument.send_message(result_message("SERIAL-2", "VM-11", comment_length=500))
        rows = kept(gateway)
        assert [(row["sample_ids"], row["sender"]) for row in rows] == [("SERIAL-1", "horiba"), ("SERIAL-2", "horiba")]
        with gateway.journal() as conn:
            (address,) = conn.execute("SELECT DISTINCT peer_address FROM items").fetchone()
        assert address == pty.device
        with client(gateway, new_token(gateway, "support")) as api:
            job = api.get("/api/v1/status").json()["components"]["job:astm:horiba"]
        assert (job["state"], job["restarts"], job["failures"]) == ("ok", 0, 0)  # supervised like every job
    finally:
        pty.close()


def test_a_serial_port_missing_at_start_is_named_keeps_nothing_else_down_and_is_opened_when_it_comes(
        make_gateway: Any) -> None:
    device = Path(f"/dev/shm/vmgateway-test-tty-{uuid.uuid4().hex}")  # a USB adapter not plugged in yet (/dev/…)
    gateway = make_gateway(astm={"serial": [{"name": "horiba", "device": str(device)}]})
    line = gateway.wait_for_log("astm serial port cannot be opened")
    assert str(device) in line and '"listener": "horiba"' in line
    assert echo("127.0.0.1", gateway.port, "TEST", "VM_GATEWAY", 10).ok  # DICOM is up meanwhile
    pty = PtyMaster()
    try:
        device.symlink_to(pty.device)  # plugged in
        gateway.wait_for_log("astm serial port open", timeout=SERIAL_RETRY_S + 10)
        assert Instrument("", 0, sock=pty).send_message(result_message("LATE-1", "VM-12"))
        assert [row["sample_ids"] for row in kept(gateway)] == ["LATE-1"]
    finally:
        pty.close()
        device.unlink(missing_ok=True)


def test_records_follow_the_delimiters_the_header_declares_and_results_stay_with_their_sample() -> None:
    raw = (b"H!@~&!!!Cobas~X!!!!!!!P!1\rP!1!!PID7\rO!1!S1!!~~~K@~~~NA\rR!1!~~~K!4.2!mmol/L\r"
           b"R!2!~~~NA!141!mmol/L\rM!1!internal\rO!2!S2!!~~~GLU\rR!1!~~~GLU!5.1!mmol/L\rQ!1\rL!1!N\r")
    message = parse(raw)
    assert message.delimiters == Delimiters("!", "@", "~", "&")
    assert [(sample, [r.get(3, 4, message.delimiters) for r in results])
            for sample, results in message.sample_results] == [("S1", ["K", "NA"]), ("S2", ["GLU"])]
    assert [record.type for record in message.records] == ["H", "P", "O", "R", "R", "M", "O", "R", "Q", "L"]
    summary = summarise(message)
    assert (summary.instrument, summary.sample_ids, summary.patient_ids, summary.test_codes, summary.result_count) == (
        "Cobas X", "S1 S2", "PID7", "K NA GLU", 3)


def test_a_host_query_names_every_repeated_sample_and_only_the_first_ones_are_looked_up() -> None:
    raw = b"H|\\^&|||VetScan\rQ|1|^A\\^B\\C^D||^^^ALL||||||||O\rQ|2|E||^^^ALL\rL|1|N\r"
    assert read_query(raw) == HostQuery(["A", "B", "D", "E"], 4)  # the specimen ID, else the first component
    many = b"H|\\^&\r" + b"".join(b"Q|%d|^S%d\r" % (n, n) for n in range(1, 121)) + b"L|1|N\r"
    query = read_query(many)
    assert query is not None and query.queried == 120 and query.samples == [f"S{n}" for n in range(1, 51)]
    assert read_query(b"H|\\^&\rQ|1|^A\rP|1\rO|1|A\rR|1|^^^GLU|5.5\rL|1|N\r") is None  # results: no query
    assert read_query(b"H|\\^&\rP|1\rL|1|N\r") is None
    assert read_query(b"1H|\\^&\r2Q|1|^A\\^B\r3L|1\r") == HostQuery(["A", "B"], 2)  # a sequence digit, as parse() reads it
    assert read_query(b"H!@~&\rQ!1!~A@~B\rL!1\r") == HostQuery(["A", "B"], 2)  # the delimiters H declares
