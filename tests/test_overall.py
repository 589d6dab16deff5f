"""The overall state, judged from facts alone (vmgateway.overall): no I/O, so every combination."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vmgateway.overall import Facts, assess

TRANSFER_REASONS = {"transfers_off", "dead_items", "destination", "waiting_too_long"}

destinations = st.dictionaries(
    st.sampled_from(["dicomweb", "hl7", "astm"]),
    st.fixed_dictionaries({"state": st.sampled_from(["ok", "paused"]),
                           "last_error": st.none() | st.just("HTTP 503"),
                           "last_error_at": st.none() | st.floats(0, 100),
                           "last_delivered_at": st.none() | st.floats(0, 100)}))
facts = st.builds(
    Facts, commissioned=st.booleans(), transfers_active=st.booleans(), waiting=st.integers(0, 50),
    dead=st.integers(0, 5), oldest_waiting_s=st.none() | st.floats(0, 10**6), max_wait_s=st.floats(1, 10**5),
    destinations=destinations, power=st.sampled_from([None, "disabled", "online", "on_battery", "unknown"]),
    disk_low=st.booleans(), clock_synchronised=st.sampled_from([None, True, False]),
    failing=st.lists(st.sampled_from(["dicom", "job:retention", "pacs"]), max_size=2, unique=True))


@given(facts)
def test_attention_exactly_when_there_is_a_reason_each_with_advice(f: Facts) -> None:
    overall = assess(f)
    assert (overall.state == "attention") == bool(overall.reasons)
    assert all(r.text and r.advice for r in overall.reasons)
    if not f.commissioned:  # waiting is normal then: no transfer reason, and what is left to do is said
        assert not {r.code for r in overall.reasons} & TRANSFER_REASONS
        assert overall.to_do and overall.state != "all_well"
    else:
        assert overall.to_do == [] and overall.state != "commissioning"


def healthy(**changes: Any) -> Facts:
    values: dict[str, Any] = {"commissioned": True, "transfers_active": True, "waiting": 0, "dead": 0,
                              "oldest_waiting_s": None, "max_wait_s": 1800} | changes
    return Facts(**values)


def codes(f: Facts) -> list[str]:
    return [r.code for r in assess(f).reasons]


def test_each_fact_that_keeps_data_from_vetmanager_is_named() -> None:
    assert assess(healthy()).state == "all_well"
    assert codes(healthy(transfers_active=False, waiting=7, oldest_waiting_s=600)) == ["transfers_off"]
    assert codes(healthy(transfers_active=False)) == []  # off with nothing waiting harms nothing
    assert codes(healthy(waiting=3, oldest_waiting_s=3600)) == ["waiting_too_long"]
    assert codes(healthy(waiting=3, oldest_waiting_s=60)) == []
    assert codes(healthy(dead=2)) == ["dead_items"]
    failing = {"last_error": "HTTP 503", "last_error_at": 20.0, "last_delivered_at": 10.0, "state": "ok"}
    assert codes(healthy(destinations={"hl7": failing})) == ["destination"]
    recovered = failing | {"last_delivered_at": 30.0}  # it delivered since: the problem is over
    assert codes(healthy(destinations={"hl7": recovered})) == []
    assert codes(healthy(power="on_battery", disk_low=True, clock_synchronised=False, failing=["pacs"])) == [
        "power", "disk", "clock", "component"]
    waiting = assess(healthy(commissioned=False, transfers_active=False, waiting=10, oldest_waiting_s=9999))
    assert waiting.state == "commissioning" and "10 item(s) wait for it" in waiting.to_do[0]
    text = assess(healthy(transfers_active=False, waiting=7, oldest_waiting_s=7500)).reasons[0].text
    assert text == "transfers are off while 7 item(s) wait, the oldest for 2 h 5 min"
