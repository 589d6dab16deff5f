"""What the API's reads cost in Python: one page of the pull feed (100 HL7 items) and the status,
served in-process through the real app (httpx's ASGI transport, no TLS, no socket). By hand:

    .venv/bin/python bench/feed_read.py [--requests 300]

The receivers share the interpreter with the API, so this time is what an API read can take from
an ACK (bench/hl7_ingest.py measures that effect itself). Run it against another checkout with
PYTHONPATH=…/src to compare before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from vmgateway.api.app import GatewayView, create_app
from vmgateway.config import parse_settings
from vmgateway.hl7.messages import read_header
from vmgateway.model import Sender
from vmgateway.store import Store

MESSAGE = (Path(__file__).resolve().parent.parent / "tests" / "samples" / "hl7"
           / "oru_r01_hematology_dog_v231.hl7").read_bytes()


def with_control_id(number: int) -> bytes:
    fields = MESSAGE.split(b"\r", 1)[0].split(b"|")
    fields[9] = f"BENCH{number}".encode()
    return b"|".join(fields) + b"\r" + MESSAGE.split(b"\r", 1)[1]


async def no_poll() -> dict[str, object]:
    return {}


async def timed(api: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    took = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = await api.get(path)
        took.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text
    return took


async def measure(folder: Path, requests: int) -> None:
    settings = parse_settings({"storage": {"data_dir": str(folder)}, "power": {"enabled": False}})
    store = Store(folder, 0)
    store.open()
    try:
        for number in range(100):
            raw = with_control_id(number)
            store.submit_hl7(raw, read_header(raw), Sender("hl7", "LAB^VET", "127.0.0.1")).result(10)
        await store.settings.switch_transfers(True)
        token = store.tokens.create("bench")
        listeners = {name: {"state": "running", "last_problem": None} for name in ("dicom", "hl7", "astm")}
        view = GatewayView(settings, store, time.time(), lambda: listeners, dict, lambda: {"state": "disabled"}, dict,
                           lambda: {"state": "off", "last_poll_at": None, "last_success_at": None, "last_error": None,
                                    "last_result": None, "failures_in_a_row": 0, "next_poll_at": None},
                           no_poll)
        transport = httpx.ASGITransport(create_app(view), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                     headers={"authorization": f"Bearer {token}"}) as api:
            for path in ("/api/v1/feed?limit=100", "/api/v1/status"):
                await timed(api, path, 20)  # warm
                took = sorted(await timed(api, path, requests))
                print(f"| {path} | {statistics.median(took):.2f} | {took[int(len(took) * 0.99) - 1]:.2f} |")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print("| read | median (ms) | p99 (ms) |\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder), args.requests))


if __name__ == "__main__":
    main()
