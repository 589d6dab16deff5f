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
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.clients import in_process_api  # noqa: E402
from tests.support.hl7_peer import HEMATOLOGY, with_control_id  # noqa: E402
from vmgateway.hl7.messages import read_header  # noqa: E402
from vmgateway.model import Sender  # noqa: E402


async def timed(api: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    took = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = await api.get(path)
        took.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text
    return took


async def measure(folder: Path, requests: int) -> None:
    async with in_process_api(folder) as (api, store):
        for number in range(100):
            raw = with_control_id(HEMATOLOGY, f"BENCH{number}")
            store.submit_hl7(raw, read_header(raw), Sender("hl7", "LAB^VET", "127.0.0.1")).result(10)
        await store.settings.switch_transfers(True)
        for path in ("/api/v1/feed?limit=100", "/api/v1/status"):
            await timed(api, path, 20)  # warm
            took = sorted(await timed(api, path, requests))
            print(f"| {path} | {statistics.median(took):.2f} | {took[int(len(took) * 0.99) - 1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print("| read | median (ms) | p99 (ms) |\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder), args.requests))


if __name__ == "__main__":
    main()
