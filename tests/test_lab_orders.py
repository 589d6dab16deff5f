"""Lab orders out: the gateway against an analyzer's HL7 port that is not ours — python-hl7's own
asyncio MLLP server, answering AA, AE or nothing, up or down. (Everything imported here at the top:
CPython 3.11 can fail to compile a module imported while another thread runs — "AST constructor
recursion depth mismatch" — and the analyzer runs in a thread.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import hl7
import hl7.mllp
import pytest

from tests.support.astm_instrument import ACK, EOT, Instrument, frames_of, query_message, result_message
from tests.support.clients import client, new_token
from tests.support.gateway import GatewayProcess, free_ports, peak_rss_mb, resident_mb
from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa
from vmgateway.astm.host_query import MAX_SAMPLES_ANSWERED

ORDER: dict[str, Any] = {
    "order_id": "VM-1001", "instrument": "vetlab", "priority": "stat",
    "animal": {"name": "Öskar", "patient_id": "P-77", "species": "Canine", "breed": "Labrador", "sex": "M",
               "birth_date": "2019-04-01", "weight_kg": 31.5},
    "owner": {"family_name": "Åberg", "given_name": "Märta"},
    "tests": [{"code": "CHEM17", "text": "Chem 17"}, {"code": "CBC", "text": "Hematologi"}],
}


class Analyzer:
    """An analyzer's HL7 port: python-hl7's asyncio MLLP server on 127.0.0.1, in a thread of its
    own, answering each message with `answer` ("AA", "AE" or "silent") and keeping what came."""

    def __init__(self, port: int, answer: str = "AA") -> None:
        self.port = port
        self.answer = answer
        self.received: list[bytes] = []
        self.changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Analyzer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            hl7.mllp.start_hl7_server(self._client, "127.0.0.1", self.port), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:  # the port, and every connection still open (a silent analyzer's)
            assert self._server is not None
            self._server.close()
            connections = asyncio.all_tasks() - {asyncio.current_task()}
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                block: bytes = await reader.readblock()
                with self.changed:
                    self.received.append(block)
                    self.changed.notify_all()
                if self.answer == "silent":
                    continue
                ack = str(hl7.parse(block.decode("latin-1")).create_ack(self.answer))
                if self.answer != "AA":  # MSA-3, what the analyzer says about it
                    ack = ack.rstrip("\r") + "|Unknown test code CHEM17\r"
                writer.writeblock(ack.encode("latin-1"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def wait_for(self, count: int, timeout: float = 30) -> list[bytes]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} message(s), not {count}, within {timeout} s")
            return list(self.received)


def fields(message: bytes, segment: str, charset: str = "latin-1") -> list[list[str]]:
    """Each `segment` of the message as its fields (index = field number)."""
    return [line.split("|") for line in message.decode(charset).split("\r") if line.startswith(segment + "|")]


@pytest.fixture
def analyzer_port() -> int:
    (port,) = free_ports(1)
    return port


def ordering(make_gateway: Any, port: int, **instrument: Any) -> tuple[GatewayProcess, str]:
    gateway: GatewayProcess = make_gateway(lab={
        "instruments": [{"name": "vetlab", "host": "127.0.0.1", "port": port, "hl7_version": "2.5.1",
                         "receiving_application": "VetLab", "answer_timeout_s": 2} | instrument],
        "backoff_initial_s": 0.2, "backoff_max_s": 0.5})
    return gateway, new_token(gateway, "vetmanager")


def answered(gateway: GatewayProcess, count: int) -> None:
    gateway.wait_until(lambda lines: sum('"lab order answered"' in line for line in lines) >= count,
                       f"{count} lab message(s) answered")


def test_an_order_reaches_the_analyzer_as_orm_o01_with_its_swedish_letters(make_gateway: Any,
                                                                           analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with Analyzer(analyzer_port) as analyzer, client(gateway, token) as api:
        placed = api.post("/api/v1/lab/orders", json=ORDER)
        assert placed.status_code == 201, placed.text
        (message,) = analyzer.wait_for(1)
        answered(gateway, 1)
        record = api.get("/api/v1/lab/orders/VM-1001").json()
    (msh,) = fields(message, "MSH")
    assert (msh[4], msh[8], msh[11], msh[17]) == ("VetLab", "ORM^O01^ORM_O01", "2.5.1", "8859/1")
    assert msh[9] == record["messages"][0]["control_id"]
    (pid,) = fields(message, "PID")
    assert (pid[3], pid[5], pid[7], pid[8], pid[35], pid[36]) == (
        "P-77", "Åberg^Öskar", "20190401", "M", "^Canine", "^Labrador")
    assert fields(message, "NK1")[0][2] == "Åberg^Märta"
    orcs, obrs = fields(message, "ORC"), fields(message, "OBR")
    assert [(o[1], o[2], o[7]) for o in orcs] == [("NW", "VM-1001", "^^^^^S")] * 2
    assert [(o[2], o[4]) for o in obrs] == [("VM-1001", "CHEM17^Chem 17"), ("VM-1001", "CBC^Hematologi")]
    assert fields(message, "OBX")[0][5:7] == ["31.5", "kg"]
    assert (record["state"], record["cancelled"], record["last_answer"]) == ("acknowledged", False, "AA")


def test_an_analyzer_that_was_down_gets_the_same_message_once_it_is_back(make_gateway: Any,
                                                                        analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        gateway.wait_until(lambda lines: sum('"lab order not delivered"' in line for line in lines) >= 2,
                           "two sends refused by a closed port")
        down = api.get("/api/v1/lab/orders/VM-1001").json()
        assert down["state"] == "sent" and "refused" in down["messages"][0]["last_error"].lower(), down
        status = api.get("/api/v1/status").json()["lab"]["vetlab"]
        assert (status["state"], status["waiting"]) == ("unreachable", 1)
        with Analyzer(analyzer_port, answer="silent") as analyzer:  # up, but says nothing: sent again
            first, again = analyzer.wait_for(2)
        with Analyzer(analyzer_port) as analyzer:
            (last,) = analyzer.wait_for(1)
            answered(gateway, 1)
        record = api.get("/api/v1/lab/orders/VM-1001").json()
    assert first == again == last  # one message, the same MSH-10 each time
    assert record["state"] == "acknowledged" and record["messages"][0]["attempts"] >= 4


def test_a_refusal_is_recorded_with_its_text_and_the_next_order_still_goes(make_gateway: Any,
                                                                          analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with Analyzer(analyzer_port, answer="AE") as analyzer, client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        analyzer.wait_for(1)
        answered(gateway, 1)
        analyzer.answer = "AA"
        assert api.post("/api/v1/lab/orders", json=ORDER | {"order_id": "VM-1002"}).status_code == 201
        analyzer.wait_for(2)
        answered(gateway, 2)
        refused = api.get("/api/v1/lab/orders/VM-1001").json()
        assert api.get("/api/v1/lab/orders/VM-1002").json()["state"] == "acknowledged"
        assert [o["order_id"] for o in api.get("/api/v1/lab/orders", params={"state": "failed"}).json()] == [
            "VM-1001"]
        assert api.get("/api/v1/status").json()["lab"]["vetlab"]["failed"] == 1
        page = api.post("/signin", data={"token": token}, follow_redirects=True).text  # the technician's view
        table = page[page.index('<table id="instruments">'):]
        row = table[table.index("<td>vetlab</td>"):table.index("</table>")]
        assert "<td>0</td><td>1</td><td>0</td>" in row  # waiting, refused, dead
        assert api.post("/api/v1/lab/orders/VM-1001/retry").json()["requeued"] == 1  # fixed on the analyzer
        analyzer.wait_for(3)
        answered(gateway, 3)
        retried = api.get("/api/v1/lab/orders/VM-1001").json()
    assert refused["state"] == "failed" and refused["last_answer"] == "AE Unknown test code CHEM17"
    assert retried["state"] == "acknowledged"


def test_a_cancellation_follows_its_order_and_ends_it(make_gateway: Any, analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with Analyzer(analyzer_port) as analyzer, client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        changed = api.put("/api/v1/lab/orders/VM-1001", json=ORDER | {"priority": "routine"})
        assert changed.status_code == 200, changed.text
        again = api.put("/api/v1/lab/orders/VM-1001", json=ORDER | {"priority": "routine"})  # changes nothing
        assert again.status_code == 200 and len(again.json()["messages"]) == 2  # so nothing is sent
        assert api.delete("/api/v1/lab/orders/VM-1001").json()["cancelled"] is True
        new, change, cancel = analyzer.wait_for(3)
        answered(gateway, 3)
        assert api.put("/api/v1/lab/orders/VM-1001", json=ORDER).status_code == 409
        assert api.delete("/api/v1/lab/orders/VM-1001").status_code == 409
        record = api.get("/api/v1/lab/orders/VM-1001").json()
    assert [fields(m, "ORC")[0][1] for m in (new, change, cancel)] == ["NW", "XO", "CA"]
    assert fields(change, "ORC")[0][7] == "^^^^^R" and {fields(m, "ORC")[0][2] for m in (new, change, cancel)} == {
        "VM-1001"}
    assert [m["control"] for m in record["messages"]] == ["NW", "XO", "CA"]
    assert (record["state"], record["cancelled"]) == ("acknowledged", True)


def test_orders_queued_when_the_gateway_is_killed_reach_the_analyzer_after_the_restart(make_gateway: Any,
                                                                                     analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with client(gateway, token) as api:
        for number in range(3):
            assert api.post("/api/v1/lab/orders", json=ORDER | {"order_id": f"VM-{number}"}).status_code == 201
    gateway.kill()
    with Analyzer(analyzer_port) as analyzer:
        gateway.start()
        received = analyzer.wait_for(3)
        answered(gateway, 3)
    assert [fields(m, "ORC")[0][2] for m in received] == ["VM-0", "VM-1", "VM-2"]  # in order, each once
    with client(gateway, token) as api:
        assert {o["state"] for o in api.get("/api/v1/lab/orders").json()} == {"acknowledged"}


def test_an_order_the_instrument_could_not_read_is_refused_with_what_is_wrong(make_gateway: Any,
                                                                             analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with client(gateway, token) as api:
        unknown = api.post("/api/v1/lab/orders", json=ORDER | {"instrument": "catalyst"})
        assert unknown.status_code == 409 and "'catalyst' is not configured (configured: vetlab)" in unknown.text
        greek = api.post("/api/v1/lab/orders", json=ORDER | {"owner": {"family_name": "Ωmega"}})
        assert greek.status_code == 409 and "'Ω' cannot be sent in vetlab's charset 8859/1" in greek.text
        delimiter = api.post("/api/v1/lab/orders", json=ORDER | {"animal": ORDER["animal"] | {"name": "Fi|do"}})
        assert delimiter.status_code == 422 and "animal" in delimiter.text
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        again = api.post("/api/v1/lab/orders", json=ORDER)
        assert again.status_code == 409 and "exists already" in again.text
        assert api.get("/api/v1/lab/orders/VM-404").status_code == 404
        assert [o["order_id"] for o in api.get("/api/v1/lab/orders").json()] == ["VM-1001"]


def test_a_result_that_names_its_order_is_linked_to_it(make_gateway: Any, analyzer_port: int) -> None:
    """The analyzer's ORU^R01 carries the placer order number in OBR-2; an ASTM analyzer's sample id
    is the order id (printed on the tube's label)."""
    (astm_port,) = free_ports(1)
    gateway, token = ordering(make_gateway, analyzer_port)
    gateway.stop()
    gateway.config.write_text(gateway.config.read_text() + f'\n[[astm.listeners]]\nname = "vetscan"\n'
                              f'bind = "127.0.0.1"\nport = {astm_port}\n')
    gateway.start()
    with Analyzer(analyzer_port) as analyzer, client(gateway, token) as api:
        for order_id in ("VM-1001", "VM-2002"):
            assert api.post("/api/v1/lab/orders", json=ORDER | {"order_id": order_id}).status_code == 201
        analyzer.wait_for(2)
        answered(gateway, 2)
        peer = Peer(gateway.hl7_port)
        try:
            peer.send(frame(HEMATOLOGY.replace(b"OBR|1|REQ-9912|", b"OBR|1|VM-1001|")))
            assert msa(peer.ack())[1] == "AA"
        finally:
            peer.close()
        instrument = Instrument("127.0.0.1", astm_port).connect()
        try:
            assert instrument.send_message(result_message("VM-2002", "P-77"))
        finally:
            instrument.close()
    assert gateway.stop() == 0  # an HL7 message is read in full after its ACK: done before the gateway stops
    gateway.start()
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
        items = api.get("/api/v1/feed", params={"after": 0}).json()["items"]
        orders = {o["order_id"]: o["state"] for o in api.get("/api/v1/lab/orders").json()}
    assert {item["kind"]: item["lab"] for item in items} == {"hl7": {"order_id": "VM-1001"},
                                                             "astm": {"order_id": "VM-2002"}}
    assert orders == {"VM-1001": "resulted", "VM-2002": "resulted"}


def test_an_order_nobody_answers_is_dead_after_its_attempts_and_retried_by_hand(make_gateway: Any,
                                                                              analyzer_port: int) -> None:
    gateway: GatewayProcess = make_gateway(lab={
        "instruments": [{"name": "vetlab", "host": "127.0.0.1", "port": analyzer_port}],
        "max_attempts": 2, "backoff_initial_s": 0.1, "backoff_max_s": 0.2})
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        gateway.wait_for_log('"dead": true')
        dead = api.get("/api/v1/lab/orders/VM-1001").json()
        assert api.get("/api/v1/status").json()["lab"]["vetlab"]["dead"] == 1
        with Analyzer(analyzer_port) as analyzer:
            assert api.post("/api/v1/lab/orders/VM-1001/retry").json()["requeued"] == 1
            analyzer.wait_for(1)
            answered(gateway, 1)
        record = api.get("/api/v1/lab/orders/VM-1001").json()
    assert (dead["state"], dead["messages"][0]["attempts"]) == ("dead", 2)
    assert (record["state"], record["messages"][0]["attempts"]) == ("acknowledged", 1)


def astm_ordering(make_gateway: Any) -> tuple[GatewayProcess, int, str]:
    """A gateway with an ASTM analyzer on a TCP port and an HL7 one for orders; its ASTM port and a token."""
    (astm_port,) = free_ports(1)
    gateway: GatewayProcess = make_gateway(
        astm={"listeners": [{"name": "vetscan", "bind": "127.0.0.1", "port": astm_port}]},
        lab={"instruments": [{"name": "vetlab", "host": "127.0.0.1", "port": free_ports(1)[0]}]})
    return gateway, astm_port, new_token(gateway, "vetmanager")


def test_an_astm_analyzer_asking_for_a_samples_orders_gets_them_or_no_information(make_gateway: Any) -> None:
    """E1394 host query on the same link: the sample id is the order id on the tube's label."""
    gateway, astm_port, token = astm_ordering(make_gateway)
    with client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        assert api.post("/api/v1/lab/orders", json=ORDER | {"order_id": "VM-GONE"}).status_code == 201
        assert api.delete("/api/v1/lab/orders/VM-GONE").status_code == 200
    instrument = Instrument("127.0.0.1", astm_port).connect()
    try:
        assert instrument.send_message(query_message("VM-1001"))
        found = instrument.receive_message()
        assert instrument.send_message(query_message("VM-UNKNOWN", "VM-GONE"))
        nothing = instrument.receive_message()
    finally:
        instrument.close()
    assert [record[:1] for record in found] == [b"H", b"P", b"O", b"L"]
    assert found[1].split(b"|")[3] == b"P-77" and found[1].split(b"|")[5] == "Åberg^Öskar".encode("latin-1")
    assert found[2].split(b"|")[2:6] == [b"VM-1001", b"", b"^^^CHEM17\\^^^CBC", b"S"]
    assert found[3] == b"L|1|N"
    assert [record[:1] for record in nothing] == [b"H", b"L"] and nothing[1] == b"L|1|I"  # no information
    with gateway.journal() as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0  # a query is not a result


def test_the_metrics_say_what_waits_for_each_analyzer(make_gateway: Any, analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    with client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
        gateway.wait_for_log('"lab order not delivered"')
        metrics = api.get("/api/v1/metrics").text
    assert 'vmgateway_lab_messages{instrument="vetlab",state="waiting"} 1.0' in metrics
    assert 'vmgateway_lab_instrument_reachable{instrument="vetlab"} 0.0' in metrics


def test_a_host_query_the_journal_cannot_answer_gets_no_answer_and_the_link_goes_on(make_gateway: Any) -> None:
    """No answer is better than a wrong "no information" (the analyzer asks again); the
    conversation, which a journal error once ended without a word, carries on."""
    gateway, astm_port, token = astm_ordering(make_gateway)
    with client(gateway, token) as api:
        assert api.post("/api/v1/lab/orders", json=ORDER).status_code == 201
    journal = gateway.data_dir / "journal.sqlite"
    instrument = Instrument("127.0.0.1", astm_port, timeout=3).connect()
    try:
        journal.rename(journal.with_name("hidden.sqlite"))  # reads open it by name: they fail now
        try:
            assert instrument.send_message(query_message("VM-1001"))  # the query itself is taken
            line = gateway.wait_for_log("astm host query not answered")
            assert '"samples": ["VM-1001"]' in line
            with pytest.raises(TimeoutError):
                instrument.reply()  # no ENQ: nothing is said rather than something wrong
        finally:
            journal.with_name("hidden.sqlite").rename(journal)
        assert instrument.send_message(query_message("VM-1001"))  # the same connection
        found = instrument.receive_message()
    finally:
        instrument.close()
    assert found[2].split(b"|")[2] == b"VM-1001"


@pytest.mark.parametrize(("path", "value", "said"), [
    (("animal", "breed"), "Labrador\x1c", "U+001C is a control character"),  # MLLP's end of block
    (("animal", "name"), "Fido\x0bX", "U+000B is a control character"),  # MLLP's start of block
    (("owner", "family_name"), "Berg\x00", "U+0000 is a control character"),
    (("animal", "species"), "Canine\x03", "U+0003 is a control character"),  # E1381's ETX
    (("owner", "given_name"), "M\x85rta", "U+0085 is a control character"),  # C1
    (("animal", "name"), "   ", "it needs more than spaces"),
    (("order_id",), "....", "an id needs a letter or a digit"),
])
def test_an_order_field_that_could_break_a_frame_is_refused_by_name(make_gateway: Any, analyzer_port: int,
                                                                    path: tuple[str, ...], value: str,
                                                                    said: str) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    body = json.loads(json.dumps(ORDER))
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    with client(gateway, token) as api:
        refused = api.post("/api/v1/lab/orders", json=body)
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["detail"]
        assert problem["loc"] == ["body", *path] and said in problem["msg"]
        assert api.get("/api/v1/lab/orders").json() == []  # nothing queued


def test_a_lone_surrogate_in_an_order_is_a_422_not_a_500(make_gateway: Any, analyzer_port: int) -> None:
    gateway, token = ordering(make_gateway, analyzer_port)
    raw = json.dumps(ORDER).replace('"Labrador"', '"Labrador\\ud800"').encode()
    with client(gateway, token) as api:
        refused = api.post("/api/v1/lab/orders", content=raw, headers={"content-type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert api.get("/api/v1/lab/orders").json() == []


def test_a_host_query_for_300000_samples_is_answered_for_the_first_ones_in_time_and_memory(
        make_gateway: Any) -> None:
    """One message once took the gateway from 95 MB to 1.4 GB and its final frame 49 s to be
    acknowledged (E1381: 15 s). 3,000 Q records of 100 samples each (repeats of Q-3, every one
    asked about): the first MAX_SAMPLES_ANSWERED are looked up, the rest answered as unknown."""
    gateway, astm_port, token = astm_ordering(make_gateway)
    with client(gateway, token) as api:
        for order_id in ("S-000007", f"S-{MAX_SAMPLES_ANSWERED + 10:06d}"):  # one among the first, one beyond
            assert api.post("/api/v1/lab/orders", json=ORDER | {"order_id": order_id}).status_code == 201
    samples = [f"S-{n:06d}" for n in range(300_000)]
    records = [b"H|\\^&|||VetScan^VS2^3.1.35|||||||P|LIS2-A2|20261208101500"]
    records += [f"Q|{n + 1}|".encode() + b"\\".join(f"^{s}".encode() for s in samples[n * 100:(n + 1) * 100])
                + b"||^^^ALL||||||||O" for n in range(3000)]
    records.append(b"L|1|N")
    assert gateway.proc is not None
    before_mb = resident_mb(gateway.proc.pid)
    instrument = Instrument("127.0.0.1", astm_port, timeout=30).connect()
    try:
        assert instrument.establish() == ACK
        parts = frames_of(records)
        for number, (text, ends_record) in enumerate(parts[:-1], start=1):
            assert instrument.send_frame(number, text, ends_record) == ACK
        began = time.monotonic()
        assert instrument.send_frame(len(parts), *parts[-1]) == ACK
        final_frame_s = time.monotonic() - began
        instrument.sock.sendall(EOT)
        answer = instrument.receive_message()
    finally:
        instrument.close()
    assert final_frame_s < 15  # E1381's receiver timeout
    assert peak_rss_mb(gateway.proc.pid) - before_mb < 30
    orders = [record.split(b"|")[2] for record in answer if record[:1] == b"O"]
    assert orders == [b"S-000007"] and answer[-1] == b"L|1|N"
    line = gateway.wait_for_log("astm host query larger than is answered")
    assert '"queried": 300000' in line and f'"answered": {MAX_SAMPLES_ANSWERED}' in line
