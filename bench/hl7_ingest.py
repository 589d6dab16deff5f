"""HL7 ingest: vmgateway (durable) beside python-hl7's bare asyncio server, in one run. By hand:

    .venv/bin/python bench/hl7_ingest.py [--gateway-only]

The client (asyncio, in this process) sends the 568-byte haematology sample, each copy with its
own MSH-10, and waits for each ACK before the next on that connection, like an analyzer does.
Runs: 1 connection and 10 connections as fast as the ACKs come (messages/s, ACK latency p50 and
p99), one connection paced at 50 messages/s (latency) — for vmgateway also while a client reads
/api/v1/status and /api/v1/feed 20 times a second (the API must not delay ACKs) — and for
vmgateway the peak RSS while a 16 MB message arrives on one connection and small ones on nine
others. Every server listens on 127.0.0.1 and starts fresh for each run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "tests" / "samples" / "hl7" / "oru_r01_hematology_dog_v231.hl7").read_bytes()
PORT = 12576
API_PORT = PORT + 2
API_READS_PER_S = 20


def message(number: int, extra: bytes = b"") -> bytes:
    fields = SAMPLE.split(b"\r", 1)[0].split(b"|")
    fields[9] = f"B{number:08d}".encode()
    return b"|".join(fields) + b"\r" + SAMPLE.split(b"\r", 1)[1] + extra


def start_vmgateway(workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{workdir / "var"}"\nmin_free_mb = 64\n[dicom]\nbind = "127.0.0.1"\nport = {PORT + 1}\n'
        f'[hl7]\nbind = "127.0.0.1"\nport = {PORT}\n'
        # Ten instruments from one address here: above the default share of 10 connections per address
        # (the probe that waited for the port may not be counted out yet when they connect).
        "max_connections_per_peer = 32\n"
        f'[api]\nbind = "127.0.0.1"\nport = {API_PORT}\n'
        "[power]\nenabled = false\n"
    )
    made = subprocess.run([sys.executable, "-m", "vmgateway", "token", "create", "bench", "--config", str(config)],
                          capture_output=True, text=True, check=True)
    (workdir / "token").write_text(made.stdout.strip())
    return subprocess.Popen([sys.executable, "-m", "vmgateway", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bare(workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "hl7_bare_server.py"), str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_listening() -> None:
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", PORT)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("server did not listen")


async def sender(first: int, count: int, pace_s: float, latencies: list[float], extra: bytes = b"") -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    next_at = time.perf_counter()
    for number in range(first, first + count):
        if pace_s:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += pace_s
        began = time.perf_counter()
        writer.write(b"\x0b" + message(number, extra) + b"\x1c\r")
        await writer.drain()
        ack = await reader.readuntil(b"\x1c")
        latencies.append(time.perf_counter() - began)
        if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
            raise RuntimeError(f"not accepted: {ack[:200]!r}")
    writer.close()


async def load(connections: int, per_connection: int, pace_s: float = 0.0) -> tuple[float, list[float]]:
    latencies: list[float] = []
    began = time.perf_counter()
    await asyncio.gather(*(sender(c * per_connection, per_connection, pace_s, latencies) for c in range(connections)))
    return connections * per_connection / (time.perf_counter() - began), sorted(latencies)


async def read_api(token: str, stop: EventType, reads: Synchronized[int]) -> None:
    """Status and the feed, alternately, API_READS_PER_S times a second until `stop`."""
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{API_PORT}", verify=False, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as api:
        for _ in range(100):
            try:
                (await api.post("/api/v1/transfers/activate")).raise_for_status()
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        next_at = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += 1 / API_READS_PER_S
            path = "/api/v1/status" if reads.value % 2 == 0 else "/api/v1/feed?undelivered=false&limit=100"
            (await api.get(path)).raise_for_status()
            reads.value += 1


def _api_reader(token: str, stop: EventType, reads: Synchronized[int]) -> None:
    asyncio.run(read_api(token, stop, reads))


async def paced_while_reading(workdir: Path) -> tuple[float, list[float]]:
    """The paced load while another process reads the API: in this process, the reader's own
    TLS and JSON would delay the sender's reading of its ACKs and be counted as the gateway's."""
    stop, reads = multiprocessing.Event(), multiprocessing.Value("i", 0)
    reader = multiprocessing.Process(target=_api_reader, args=((workdir / "token").read_text(), stop, reads))
    reader.start()
    try:
        return await load(1, 500, pace_s=0.02)
    finally:
        stop.set()
        reader.join(60)
        if reads.value < 100:
            raise RuntimeError("the API was not read while the messages arrived")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def big_and_small(_: Path) -> None:
    pdf = b"OBX|7|ED|PDF^Report||^application^pdf^Base64^" + b"QUJD" * (4 * 2**20 - 1024) + b"\r"  # 16 MiB
    await asyncio.gather(sender(10**7, 1, 0.0, [], extra=pdf),
                         *(sender(10**7 + 100 * c, 100, 0.0, []) for c in range(1, 10)))


def run(start: Callable[[Path], subprocess.Popen[bytes]], scenario: Callable[[Path], object]) -> tuple[object, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp))
        try:
            asyncio.run(wait_listening())
            result: object = asyncio.run(scenario(Path(tmp)))  # type: ignore[arg-type]
            return result, peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(60)


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway-only", action="store_true", help="leave out the bare python-hl7 server")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| receiver | load | messages/s | ACK p50 (ms) | ACK p99 (ms) | peak RSS (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    loads: list[tuple[str, Callable[[Path], object]]] = [
        ("1 connection", lambda _: load(1, 3000)),
        ("10 connections", lambda _: load(10, 500)),
        ("1 connection at 50/s", lambda _: load(1, 500, pace_s=0.02)),
    ]
    api_load = (f"1 connection at 50/s, API read {API_READS_PER_S}/s", paced_while_reading)
    receivers = [("vmgateway", start_vmgateway, [*loads, api_load])]
    if not args.gateway_only:
        receivers.append(("python-hl7 bare (not durable)", start_bare, loads))
    for name, start, scenarios in receivers:
        for label, scenario in scenarios:
            runs = [run(start, scenario) for _ in range(3)]
            rate = statistics.median(r[0][0] for r in runs)  # type: ignore[index]
            latencies = sorted(x for r in runs for x in r[0][1])  # type: ignore[index]
            peak = max(r[1] for r in runs)
            print(f"| {name} | {label} | {rate:.0f} | {quantile(latencies, 0.5):.2f} | {quantile(latencies, 0.99):.2f}"
                  f" | {peak:.0f} |", flush=True)
    _, idle_peak = run(start_vmgateway, lambda _: load(1, 10))
    _, big_peak = run(start_vmgateway, big_and_small)
    print(f"\nvmgateway peak RSS: {idle_peak:.0f} MB after 10 small messages;"
          f" {big_peak:.0f} MB with a 16 MB message on one connection and 900 small ones on nine others")


if __name__ == "__main__":
    main()
