"""The lab order's protocol parts, without I/O: the ORM^O01 built (python-hl7 reads back every
value it was given), the ACK read (any bytes give an answer or NotAnAnswer, nothing else), and the
E1381 frames a host query's answer goes out in (the receiving link reads them back)."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any

import hl7
import pytest
from hl7.mllp.streams import MLLPStreamReader
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vmgateway.astm.link import ACK, ENQ, LinkReceiver, Message, Reply, frames
from vmgateway.config import LabInstrument
from vmgateway.hl7.framing import Frame, MllpDecoder, framed
from vmgateway.lab.answers import MAX_ANSWER_TEXT, Answer, NotAnAnswer, read_answer
from vmgateway.lab.order import LabOrder
from vmgateway.lab.orm import CannotEncode, orm_o01

LATIN1_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255,
                                    exclude_characters="|^~\\&" + "".join(map(chr, range(0x7F, 0xA0)))),
                      min_size=1, max_size=40).map(str.strip).filter(bool)
CODES = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)
INSTRUMENT = LabInstrument(name="vetlab", host="127.0.0.1", port=9100, hl7_version="2.5.1")


@st.composite
def orders(draw: st.DrawFn) -> LabOrder:
    return LabOrder.model_validate({
        "order_id": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,21}", fullmatch=True)), "instrument": "vetlab",
        "animal": {"name": draw(LATIN1_TEXT), "patient_id": draw(CODES), "species": draw(LATIN1_TEXT),
                   "breed": draw(LATIN1_TEXT), "sex": draw(st.sampled_from(["M", "F", "O", "U", ""])),
                   "birth_date": draw(st.none() | st.dates(date(1990, 1, 1), date(2030, 1, 1))),
                   "weight_kg": draw(st.none() | st.floats(0.01, 2000))},
        "owner": {"family_name": draw(LATIN1_TEXT), "given_name": draw(st.just("") | LATIN1_TEXT)},
        "tests": [{"code": code, "text": text} for code, text in draw(st.lists(st.tuples(CODES, LATIN1_TEXT),
                                                                                 min_size=1, max_size=5))],
        "priority": draw(st.sampled_from(["routine", "stat"]))})


@settings(max_examples=200, deadline=None)
@given(orders(), st.sampled_from(["NW", "XO", "CA"]))
def test_every_value_of_an_order_is_read_back_from_its_message(order: LabOrder, control: str) -> None:
    raw = orm_o01(order, INSTRUMENT, control, "VMG42", datetime(2026, 12, 3, 10, 0))  # type: ignore[arg-type]
    message = hl7.parse(raw.decode("latin-1"))
    assert str(message.segment("MSH")[10]) == "VMG42"
    pid = message.segment("PID")
    assert (str(pid[3]), str(pid[5][0][0]), str(pid[5][0][1])) == (
        order.animal.patient_id, order.owner.family_name, order.animal.name)
    assert (str(pid[35][0][1]), str(pid[36][0][1])) == (order.animal.species, order.animal.breed)
    orcs, obrs = message.segments("ORC"), message.segments("OBR")
    assert [(str(orc[1]), str(orc[2])) for orc in orcs] == [(control, order.order_id)] * len(order.tests)
    assert [(str(obr[2]), str(obr[4][0][0]), str(obr[4][0][1])) for obr in obrs] == [
        (order.order_id, test.code, test.text) for test in order.tests]


def test_a_value_the_charset_cannot_carry_is_named() -> None:
    order = LabOrder.model_validate({"order_id": "VM-1", "instrument": "vetlab",
                                     "animal": {"name": "Ωmega", "patient_id": "P1"},
                                     "owner": {"family_name": "Berg"}, "tests": [{"code": "CBC"}]})
    try:
        orm_o01(order, INSTRUMENT, "NW", "VMG1", datetime(2026, 12, 3))
    except CannotEncode as exc:
        assert str(exc) == "'Ω' cannot be sent in vetlab's charset 8859/1"
    else:
        raise AssertionError("Ω went out in Latin-1")
    utf8 = INSTRUMENT.model_copy(update={"charset": "UNICODE UTF-8"})
    assert "Ωmega".encode() in orm_o01(order, utf8, "NW", "VMG1", datetime(2026, 12, 3))


def test_before_2_4_species_and_breed_have_no_field() -> None:
    order = LabOrder.model_validate({"order_id": "VM-1", "instrument": "vetlab",
                                     "animal": {"name": "Fido", "patient_id": "P1", "species": "Canine"},
                                     "owner": {"family_name": "Berg"}, "tests": [{"code": "CBC"}]})
    old = INSTRUMENT.model_copy(update={"hl7_version": "2.3.1"})
    raw = orm_o01(order, old, "NW", "VMG1", datetime(2026, 12, 3))
    assert b"Canine" not in raw and b"|ORM^O01|" in raw


def test_an_ack_says_its_code_and_text_and_must_answer_the_message_sent() -> None:
    ack = b"MSH|^~\\&|VetLab||VMGATEWAY||20261203||ACK^O01|A1|P|2.5.1\rMSA|AE|VMG7|Unknown test\rERR|^^^207\r"
    assert read_answer(ack, "VMG7", "8859/1") == Answer("AE", "Unknown test; ERR|^^^207")
    try:
        read_answer(ack, "VMG8", "8859/1")
    except NotAnAnswer as exc:
        assert "not to VMG8" in str(exc)
    else:
        raise AssertionError("an answer to another message was taken")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda tail: b"MSH|^~\\&|" + tail, st.binary(max_size=200)))
def test_any_bytes_are_an_answer_or_not_an_answer(raw: bytes) -> None:
    try:
        answer = read_answer(raw, "VMG1", "8859/1")
    except NotAnAnswer:
        return
    assert answer.code in ("AA", "AE", "AR", "CA", "CE", "CR")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=600).map(lambda b: b"R" + b.replace(b"\r", b"").replace(b"\n", b""))
                .filter(lambda r: not any(c in r for c in b"\x02\x03\x04\x05\x17")), min_size=0, max_size=12))
def test_the_frames_the_gateway_sends_are_read_back_by_the_link_that_receives(middle: list[bytes]) -> None:
    """astm.link.frames against astm.link.LinkReceiver: every record whole, in order, long ones
    split over ETB frames and joined again, frame numbers wrapping 7 → 0."""
    records = [b"H|\\^&", *middle, b"L|1|N"]
    link = LinkReceiver()
    assert link.feed(ENQ) == [Reply(ACK)]
    events = []
    for frame in frames(records):
        events += link.feed(frame)
    *acks, message = events
    assert set(acks) <= {Reply(ACK)} and message == Message(b"".join(record + b"\r" for record in records))


FRAMING = "\x00\x0b\x1c\r\n\x02\x03\x04\x05\x17\x7f\x85\x9f\ud800\udfff" + "|^~\\&"
"""MLLP's and E1381's framing bytes, NUL, DEL, C1 controls, lone surrogates and the delimiters."""
PLAIN = [chr(code) for code in range(0x20, 0x250) if not 0x7F <= code < 0xA0 and chr(code) not in "|^~\\&"]
RISKY_TEXT = st.text(st.sampled_from(PLAIN * 3 + list(FRAMING)), max_size=12)
RISKY_NAME = st.text(st.sampled_from(PLAIN * 3 + list(FRAMING)), min_size=1, max_size=12)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, object]:
    """Order bodies as anyone might send them: mostly plain text, now and then a framing byte."""
    return {
        "order_id": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,21}", fullmatch=True)), "instrument": "vetlab",
        "animal": {"name": draw(RISKY_NAME), "patient_id": draw(RISKY_NAME), "species": draw(RISKY_TEXT),
                   "breed": draw(RISKY_TEXT)},
        "owner": {"family_name": draw(RISKY_NAME), "given_name": draw(RISKY_TEXT)},
        "tests": [{"code": draw(CODES), "text": draw(RISKY_TEXT)}]}


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_an_order_the_api_accepts_is_one_frame_for_both_mllp_readers_and_reads_back(body: dict[str, Any]) -> None:
    """A breed ending in 0x1C once made the analyzer see the message end after PID (it ACKed an
    order without its tests). Every body is either refused, or it is one frame to the gateway's
    own MLLP reader and to python-hl7's, and each value reads back as given."""
    utf8 = INSTRUMENT.model_copy(update={"charset": "UNICODE UTF-8"})
    try:
        order = LabOrder.model_validate(body)
    except ValidationError:
        texts = [body["animal"][k] for k in ("name", "patient_id", "species", "breed")] + [
            body["owner"][k] for k in ("family_name", "given_name")] + [body["tests"][0]["text"]]
        assert any(set(text) & set(FRAMING) or not text.strip() for text in texts)  # refused for a reason
        return
    raw = orm_o01(order, utf8, "NW", "VMG7", datetime(2026, 12, 8))
    events = MllpDecoder(1 << 20).feed(framed(raw))
    assert [type(event) for event in events] == [Frame] and bytes(events[0].payload) == raw  # type: ignore[union-attr]

    async def python_hl7_blocks() -> list[bytes]:
        reader = MLLPStreamReader()
        reader.feed_data(framed(raw))
        reader.feed_eof()
        blocks = [await reader.readblock()]
        with pytest.raises(asyncio.IncompleteReadError):
            blocks.append(await reader.readblock())
        return blocks

    assert asyncio.run(python_hl7_blocks()) == [raw]
    message = hl7.parse(raw.decode("utf-8"))
    pid, nk1, obr = message.segment("PID"), message.segment("NK1"), message.segment("OBR")
    assert (str(pid[3]), str(pid[5][0][0]), str(pid[5][0][1])) == (
        order.animal.patient_id, order.owner.family_name, order.animal.name)
    assert str(nk1[2]) == (f"{order.owner.family_name}^{order.owner.given_name}" if order.owner.given_name
                           else order.owner.family_name)
    assert (str(obr[2]), str(obr[4]).split("^")[0]) == (order.order_id, order.tests[0].code)


def test_an_instruments_answer_is_kept_bounded() -> None:
    said = "x" * 1_000_000
    ack = f"MSH|^~\\&|VetLab||VMGATEWAY||20261208||ACK^O01|A1|P|2.5.1\rMSA|AE|VMG7|{said}\r".encode()
    answer = read_answer(ack, "VMG7", "8859/1")
    assert answer.code == "AE" and len(answer.text) == MAX_ANSWER_TEXT and answer.text.endswith("…")
