"""The slow-uplink rules without I/O: the pace never lets more out than its rate allows and waits
no longer than needed; a window opens when it says it does."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmgateway.config import ConfigError, parse_settings
from vmgateway.transfers.pacing import SLICE, Pace, paced
from vmgateway.when import Window

pieces = st.lists(st.tuples(st.integers(1, 200_000), st.floats(0, 2)), min_size=1, max_size=60)


@given(st.integers(8, 100_000), pieces)
def test_the_pace_never_lets_more_out_than_its_rate(kbit_s: int, sends: list[tuple[int, float]]) -> None:
    pace = Pace(kbit_s)
    now, sent = 0.0, 0
    for size, idle in sends:
        now += idle
        now += pace.delay(size, now)
        sent += size
        assert sent <= pace.rate * now + 1e-6 * sent, "ahead of the rate"


@given(st.integers(8, 100_000), st.lists(st.integers(1, 200_000), min_size=1, max_size=60))
def test_back_to_back_pieces_go_as_soon_as_the_rate_allows(kbit_s: int, sizes: list[int]) -> None:
    pace = Pace(kbit_s)
    now = 0.0
    for size in sizes:
        now += pace.delay(size, now)
    assert now == pytest.approx(sum(sizes) / pace.rate, rel=1e-9)


@given(st.lists(st.binary(max_size=3 * SLICE), max_size=8), st.booleans())
def test_a_paced_body_is_the_same_bytes_in_slices(chunks: list[bytes], with_pace: bool) -> None:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[bytes]:
        pace = Pace(10**7) if with_pace else None  # fast: the test is about the bytes
        return [piece async for piece in paced(source(), pace, clock=lambda: 0.0 if pace is None else 1e9)]

    out = asyncio.run(collect())
    assert b"".join(out) == b"".join(chunks)
    if with_pace:
        assert all(0 < len(piece) <= SLICE for piece in out)


times = st.datetimes(min_value=datetime.datetime(2026, 1, 1), max_value=datetime.datetime(2027, 1, 1))
clock_times = st.times().map(lambda t: t.replace(second=0, microsecond=0))


@given(clock_times, clock_times, times)
def test_a_window_opens_when_it_says(start: datetime.time, end: datetime.time, moment: datetime.datetime) -> None:
    if start == end:
        return
    window = Window.parse(f"{start:%H:%M}-{end:%H:%M}")
    opens = window.opens_next(moment)
    assert opens >= moment and window.is_open(opens)
    if opens > moment:  # closed until then, minute by minute
        assert opens - moment <= datetime.timedelta(days=1)
        step = moment.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        while step < opens:
            assert not window.is_open(step), step
            step += datetime.timedelta(minutes=37)


def test_windows_through_midnight_and_wrong_ones() -> None:
    night = Window.parse("18:00-07:00")
    assert night.is_open(datetime.datetime(2026, 12, 3, 23, 0)) and night.is_open(datetime.datetime(2026, 12, 3, 6, 59))
    assert not night.is_open(datetime.datetime(2026, 12, 3, 7, 0))
    assert night.opens_next(datetime.datetime(2026, 12, 3, 12, 0)) == datetime.datetime(2026, 12, 3, 18, 0)
    for wrong, said in (("18-7", "HH:MM-HH:MM"), ("18:00-18:00", "an end other than its start"),
                        ("25:00-07:00", "HH:MM-HH:MM")):
        with pytest.raises(ConfigError, match=said):
            parse_settings({"transfers": {"large_items_window": wrong}})
