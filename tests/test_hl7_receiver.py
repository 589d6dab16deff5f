"""The HL7 receiver against python-hl7's `mllp_send` and raw sockets: framings, bad input, limits."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import MLLP_SEND, SAMPLES
from tests.support.gateway import GatewayProcess
from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id


@pytest.mark.peer
def test_every_sample_through_mllp_send(gateway: GatewayProcess, tmp_path: Path) -> None:
    expectations = {
        "oru_r01_hematology_dog_v231.hl7": ("AA", "HV000123"),
        "oru_r01_chemistry_one_test_per_message_v231.hl7": ("AA", "77"),
        "oru_r01_qc_no_pid_no_obx_v231.hl7": ("AA", "78"),
        "oru_r01_swedish_latin1_v25.hl7": ("CA", "UV-5521"),  # MSH-15 = AL: enhanced mode
        "oru_r01_swedish_utf8_v25.hl7": ("CA", "UV-5522"),
        "oru_r01_lf_line_endings.hl7": ("AA", "HV000130"),
        "oru_r01_crlf_line_endings.hl7": ("AA", "HV000131"),
        "oru_r01_embedded_pdf_report_v25.hl7": ("CA", "RL-100042"),
        "oru_r01_zsegment_v25.hl7": ("AA", "HV000140"),
        "msh_without_control_id.hl7": ("AA", ""),
        "truncated_msh.hl7": ("AR", ""),
        "not_hl7.txt": ("AR", ""),
    }
    stored = []
    for name, (code, control_id) in expectations.items():
        framed = tmp_path / name
        framed.write_bytes(frame((SAMPLES / name).read_bytes()))
        sent = subprocess.run(
            [str(MLLP_SEND), "-p", str(gateway.hl7_port), "-f", str(framed), "127.0.0.1"],
            capture_output=True, timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        fields = msa(sent.stdout.strip(b"\x0b\x1c\r\n"))
        assert (fields[1], fields[2]) == (code, control_id), f"{name}: {fields}"
        if code in ("AA", "CA"):
            stored.append((SAMPLES / name).read_bytes().strip(b"\x0b\r"))  # mllp_send strips CRs at the ends
    rows = gateway.hl7_messages()
    assert [bytes(row["data"]) for row in rows] == stored  # raw bytes exactly as received
    hematology = next(r for r in rows if r["control_id"] == "HV000123")
    assert (hematology["sending_application"], hematology["sending_facility"]) == ("HEMA-VET", "LAB1")
    assert (hematology["message_type"], hematology["version"], hematology["processing_id"]) == ("ORU^R01", "2.3.1", "P")
    assert (hematology["sender"], hematology["peer_address"]) == ("HEMA-VET^LAB1", "127.0.0.1")


def test_details_are_read_after_the_ack(gateway: GatewayProcess) -> None:
    peer = Peer(gateway.hl7_port)
    for name in ("oru_r01_hematology_dog_v231.hl7", "oru_r01_swedish_latin1_v25.hl7", "oru_r01_lf_line_endings.hl7"):
        peer.send(frame((SAMPLES / name).read_bytes()))
        assert msa(peer.ack())[1] in ("AA", "CA")
    peer.close()
    assert gateway.stop() == 0  # details still pending are finished before the gateway stops
    rows = {r["control_id"]: r for r in gateway.hl7_messages()}
    hematology, swedish, lf = rows["HV000123"], rows["UV-5521"], rows["HV000130"]
    assert (hematology["patient_id"], hematology["observation_count"]) == ("P-48213", 6)
    assert (hematology["placer_order_number"], hematology["filler_order_number"]) == ("REQ-9912", "S-000455")
    assert (swedish["charset_used"], swedish["patient_id"]) == ("8859/1", "P-50077")
    assert lf["observation_count"] == 1, "LF-terminated segments must be read as segments"
    assert all(r["details_read"] == 1 for r in rows.values())


def test_framing_variants_all_get_acks(gateway: GatewayProcess) -> None:
    peer = Peer(gateway.hl7_port)
    peer.send(frame(with_control_id(HEMATOLOGY, "NO-CR"), trailer=b"\x1c"))  # no CR after the end byte
    assert msa(peer.ack())[1:3] == ["AA", "NO-CR"]
    peer.send(b"\n\x00\r\n" + frame(with_control_id(HEMATOLOGY, "NUL-LF")) + b"\x00\n")
    assert msa(peer.ack())[1:3] == ["AA", "NUL-LF"]
    for byte in frame(with_control_id(HEMATOLOGY, "ONE-BYTE")):  # a frame split into 1-byte writes
        peer.send(bytes([byte]))
    assert msa(peer.ack())[1:3] == ["AA", "ONE-BYTE"]
    peer.send(b"".join(frame(with_control_id(HEMATOLOGY, f"BATCH-{i}")) for i in range(50)))
    assert [msa(peer.ack())[2] for _ in range(50)] == [f"BATCH-{i}" for i in range(50)]
    peer.close()
    for i in range(5):  # a connection per message
        one = Peer(gateway.hl7_port)
        one.send(frame(with_control_id(HEMATOLOGY, f"CONN-{i}")))
        assert msa(one.ack())[1:3] == ["AA", f"CONN-{i}"]
        one.close()
    assert len(gateway.hl7_messages()) == 3 + 50 + 5


def test_resent_messages_are_acknowledged_and_stored_once(gateway: GatewayProcess) -> None:
    without_id = (SAMPLES / "msh_without_control_id.hl7").read_bytes()
    peer = Peer(gateway.hl7_port)
    for message in (HEMATOLOGY, HEMATOLOGY, without_id, without_id):
        peer.send(frame(message))
        assert msa(peer.ack())[1] == "AA"
    changed = HEMATOLOGY.replace(b"12.4", b"12.5")  # same MSH-10, other content: a new message
    peer.send(frame(changed))
    assert msa(peer.ack())[1] == "AA"
    peer.close()
    assert [bytes(r["data"]) for r in gateway.hl7_messages()] == [HEMATOLOGY, without_id, changed]


def test_enhanced_mode_honours_msh_15(gateway: GatewayProcess) -> None:
    def with_msh_15(value: bytes, control_id: str) -> bytes:
        fields = with_control_id(HEMATOLOGY, control_id).split(b"\r", 1)[0].split(b"|")
        fields += [b""] * (16 - len(fields))
        fields[14] = value
        return b"|".join(fields) + b"\r" + HEMATOLOGY.split(b"\r", 1)[1]

    peer = Peer(gateway.hl7_port)
    peer.send(frame(with_msh_15(b"NE", "NEVER")))  # no ACK wanted ...
    peer.send(frame(with_msh_15(b"AL", "ALWAYS")))
    assert msa(peer.ack())[1:3] == ["CA", "ALWAYS"]  # ... so the next ACK is for the next message
    peer.close()
    assert [r["control_id"] for r in gateway.hl7_messages()] == ["NEVER", "ALWAYS"]


def test_oversized_message_gets_ar_and_the_connection_closes(make_gateway: Any) -> None:
    gateway = make_gateway(hl7={"max_message_bytes": 100_000})
    big = with_control_id(HEMATOLOGY, "BIG") + b"OBX|7|ED|PDF||" + b"A" * 300_000 + b"\r"
    peer = Peer(gateway.hl7_port)
    peer.send(frame(big))
    fields = msa(peer.ack())
    assert fields[1:3] == ["AR", "BIG"] and "exceeds the limit of 100000" in fields[3]
    assert peer.closed_by_gateway()
    assert gateway.hl7_messages() == []


@pytest.mark.parametrize("junk", [os.urandom(2048).replace(b"\x0b", b""), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_bytes_that_are_not_mllp_close_the_connection(gateway: GatewayProcess, junk: bytes) -> None:
    peer = Peer(gateway.hl7_port)
    peer.send(junk)
    assert peer.closed_by_gateway()
    assert b"\x0b" not in peer.buffer  # nothing was answered
    other = Peer(gateway.hl7_port)  # and the receiver serves the next sender as before
    other.send(frame(HEMATOLOGY))
    assert msa(other.ack())[1] == "AA"


def test_half_open_frame_is_freed_by_the_idle_timeout(make_gateway: Any) -> None:
    gateway = make_gateway(hl7={"idle_timeout_s": 1})
    peer = Peer(gateway.hl7_port)
    peer.send(b"\x0b" + HEMATOLOGY[:100])  # never finished
    assert peer.closed_by_gateway()
    gateway.wait_for_log('"half_frame": true')
    assert gateway.hl7_messages() == []


def test_peers_and_connection_limits(make_gateway: Any) -> None:
    fenced = make_gateway(hl7={"allowed_peers": ["192.0.2.0/24"]})
    outsider = Peer(fenced.hl7_port)
    outsider.send(frame(HEMATOLOGY))
    assert outsider.closed_by_gateway() and outsider.buffer == b""
    fenced.wait_for_log("address not allowed")

    crowded = make_gateway(hl7={"max_connections": 1})
    first = Peer(crowded.hl7_port)
    first.send(frame(HEMATOLOGY))
    assert msa(first.ack())[1] == "AA"  # the first connection is being served
    second = Peer(crowded.hl7_port)
    assert second.closed_by_gateway() and second.buffer == b""
    first.close()


def test_disk_below_watermark_answers_ae(make_gateway: Any) -> None:
    gateway = make_gateway(storage={"min_free_mb": 10**9})
    peer = Peer(gateway.hl7_port)
    peer.send(frame(HEMATOLOGY))
    ack = peer.ack()
    assert msa(ack)[1:3] == ["AE", "HV000123"]
    assert b"\rERR|||207^" in ack
    assert gateway.hl7_messages() == []


def test_100_concurrent_connections(make_gateway: Any) -> None:
    gateway = make_gateway(hl7={"max_connections": 150, "max_connections_per_peer": 150})
    results: list[str] = []
    lock = threading.Lock()

    def one(number: int) -> None:
        peer = Peer(gateway.hl7_port)
        peer.send(frame(with_control_id(HEMATOLOGY, f"C{number:03d}")))
        code = msa(peer.ack())[1]
        peer.close()
        with lock:
            results.append(code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == ["AA"] * 100
    assert len(gateway.hl7_messages()) == 100


def test_swedish_text_comes_through_both_charsets() -> None:
    from vmgateway.hl7.messages import decode, read_header

    latin1 = (SAMPLES / "oru_r01_swedish_latin1_v25.hl7").read_bytes()
    utf8 = (SAMPLES / "oru_r01_swedish_utf8_v25.hl7").read_bytes()
    texts = [decode(raw, read_header(raw).charset)[0] for raw in (latin1, utf8)]
    for text in texts:
        assert "Västerås" in text and "Öberg^Åsa" in text and "Ägare" in text
    assert texts[0].replace("8859/1", "X").replace("UV-5521", "Y") == texts[1].replace("UNICODE UTF-8", "X").replace("UV-5522", "Y")


def test_swedish_names_reach_the_journal_in_either_charset_and_by_override(make_gateway: Any) -> None:
    gateway = make_gateway(hl7={"charset_overrides": {"OLD-LAB": "UNICODE UTF-8"}})
    latin1 = (SAMPLES / "oru_r01_swedish_latin1_v25.hl7").read_bytes().replace(b"Smulan", "Märta".encode("latin-1"))
    utf8 = (SAMPLES / "oru_r01_swedish_utf8_v25.hl7").read_bytes().replace(b"Smulan", "Märta".encode())
    # An instrument that says ISO-8859-1 but sends UTF-8 (read as latin-1: "MÃ¤rta"):
    # the override for its MSH-3 applies.
    lying = with_control_id(utf8, "LIAR").replace(b"URIN-VET", b"OLD-LAB").replace(b"UNICODE UTF-8", b"8859/1")
    peer = Peer(gateway.hl7_port)
    for message in (latin1, utf8, lying):
        peer.send(frame(message))
        assert msa(peer.ack())[1] in ("AA", "CA")
    peer.close()
    assert gateway.stop() == 0
    names = {r["control_id"]: (r["patient_name"], r["charset_used"]) for r in gateway.hl7_messages()}
    assert names == {
        "UV-5521": ("Märta^^^^^L", "8859/1"),
        "UV-5522": ("Märta^^^^^L", "UNICODE UTF-8"),
        "LIAR": ("Märta^^^^^L", "UNICODE UTF-8"),
    }


def test_a_16_mb_message_is_stored_whole_without_copies_piling_up(gateway: GatewayProcess) -> None:
    from tests.support.gateway import peak_rss_mb

    pdf = base64.b64encode(os.urandom(12 * 2**20 - 3000))  # a 12 MB PDF, 16 MB in base64
    big = with_control_id(HEMATOLOGY, "PDF-16MB") + b"OBX|7|ED|PDF^Report||^application^pdf^Base64^" + pdf + b"\r"
    peer = Peer(gateway.hl7_port)
    peer.send(frame(HEMATOLOGY))  # warm up
    assert msa(peer.ack())[1] == "AA"
    assert gateway.proc is not None
    before = peak_rss_mb(gateway.proc.pid)
    peer.send(frame(big))
    assert msa(peer.ack())[1:3] == ["AA", "PDF-16MB"]
    growth = peak_rss_mb(gateway.proc.pid) - before
    peer.close()
    assert growth < 40, f"peak RSS grew by {growth:.0f} MB for a 16 MB message"
    stored = next(r for r in gateway.hl7_messages() if r["control_id"] == "PDF-16MB")
    assert bytes(stored["data"]) == big and stored["size"] == len(big)

