"""A lab result during a large upload on a slow uplink, with and without transfers.max_upload_kbit_s.
Run by hand, as root:

    apt-get install -y dcmtk orthanc orthanc-dicomweb curl iproute2 util-linux
    .venv/bin/python bench/slow_uplink.py [--link-mbit 20] [--mib 100]

In a private network namespace whose loopback is shaped by tc to the uplink's rate (a token
bucket filter with a deep queue, as a clinic's router has), the gateway pushes one large instance
(--mib, synthetic) to Orthanc while lab results (HL7, 2 KB) arrive every second and go to their
own HTTP endpoint. Measured: the upload's time, and each result's delay from the moment it was
sent to the gateway to the moment the endpoint had it. The physical limit, in the same run: curl
posting the same file over the same link. Every hop (instrument → gateway included) crosses the
shaped loopback: the delays are pessimistic, and alike for both runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from netns import rerun_in_private_network, stopped_at_exit  # noqa: E402
from push_forward import HTTP_PORT, _orthanc, _stored, start_gateway  # noqa: E402

from tests.support.dicomdata import secondary_capture  # noqa: E402

DICOM_PORT, HL7_PORT, API_PORT, SINK_PORT = 11112, 12575, 13000, 18080
RESULTS = 10


class Sink:
    """An HTTP endpoint that takes a POST whole and notes when it arrived (by the HL7 control id)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                control = body.split(b"|")[9].decode(errors="replace") if body.count(b"|") > 9 else ""
                sink.arrived.setdefault(control, time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", SINK_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _shape(mbit: int) -> None:
    # An Ethernet MTU: loopback's 64 KiB packets would never fit the bucket's burst.
    subprocess.run(["ip", "link", "set", "lo", "mtu", "1500"], check=True)
    subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{mbit}mbit", "burst", "32kb",
                    "latency", "2s"], check=True)


def _unshape() -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False, capture_output=True)


def _send_result(number: int) -> float:
    message = (f"MSH|^~\\&|LAB|CLINIC|VM|VM|20261203120000||ORU^R01|RESULT-{number}|P|2.5\r"
               f"PID|1||4711||Fido\r" + "OBX|1|NM|GLU||5.5|mmol/L\r" * 40).encode()
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", HL7_PORT), timeout=60) as sock:
        sock.sendall(b"\x0b" + message + b"\x1c\r")
        sock.recv(4096)
    return began


def _curl(path: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-X", "POST", "--data-binary", f"@{path}", "-H", "Expect:",
                    f"http://127.0.0.1:{SINK_PORT}/"], check=True, timeout=3600)
    return time.perf_counter() - began


def _gateway_run(instance: Path, workdir: Path, kbit_s: int, link_mbit: int, sink: Sink) -> tuple[float, list[float]]:
    with stopped_at_exit(_orthanc(workdir)):
        return _upload_beside_results(instance, workdir, kbit_s, link_mbit, sink)


def _upload_beside_results(instance: Path, workdir: Path, kbit_s: int, link_mbit: int,
                           sink: Sink) -> tuple[float, list[float]]:
    config = workdir / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{workdir / "var"}"\nmin_free_mb = 64\n'
        f'[dicom]\nbind = "127.0.0.1"\nport = {DICOM_PORT}\n'
        f'[hl7]\nbind = "127.0.0.1"\nport = {HL7_PORT}\n[api]\nbind = "127.0.0.1"\nport = {API_PORT}\n'
        f'[power]\nenabled = false\n'
        f'[transfers]\nmode = "push"\ndicomweb_url = "http://127.0.0.1:{HTTP_PORT}/dicom-web"\n'
        f'hl7_url = "http://127.0.0.1:{SINK_PORT}/hl7"\nallow_plain_http = true\nmax_upload_kbit_s = {kbit_s}\n'
        f'timeout_s = 3600\n')
    gateway, api = start_gateway(config, API_PORT)
    try:
        subprocess.run(["storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(DICOM_PORT), str(instance)],
                       env=os.environ | {"TCP_NODELAY": "1"}, check=True, capture_output=True, timeout=600)
        _shape(link_mbit)
        began = time.monotonic()
        api.post("/api/v1/transfers/activate").raise_for_status()
        time.sleep(3)  # the upload is under way
        sent = {}
        for number in range(RESULTS):
            sent[f"RESULT-{number}"] = _send_result(number)
            time.sleep(1)
        while _stored() < 1 or len(sink.arrived) < RESULTS:
            if time.monotonic() - began > 3600:
                raise RuntimeError("not delivered within an hour")
            time.sleep(0.2)
        upload = time.monotonic() - began  # an upper bound: it is seen within 0.2 s
        delays = [sink.arrived[control] - at for control, at in sent.items()]
    finally:
        _unshape()
        gateway.terminate()
        gateway.wait(60)
    sink.arrived.clear()
    return upload, delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link-mbit", type=int, default=20)
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    rerun_in_private_network()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    sink = Sink()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        instance = secondary_capture(Path(tmp) / "loop.dcm", frames=args.mib, rows=1024, columns=1024)
        megabytes = instance.stat().st_size / 1e6
        _shape(args.link_mbit)
        try:
            limit = _curl(instance)
        finally:
            _unshape()
        sink.arrived.clear()
        print(f"link: tc tbf {args.link_mbit} Mbit/s on loopback; instance {megabytes:.0f} MB; {RESULTS} HL7 results,"
              " one a second, sent 3 s into the upload\n")
        print("| run | upload (s) | upload MB/s | result delay median (s) | result delay max (s) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(f"| curl, the same file over the same link (the limit) | {limit:.1f} | {megabytes / limit:.2f} | – | – |")
        for kbit_s in (0, args.link_mbit * 1000 * 8 // 10):
            with tempfile.TemporaryDirectory(dir=out) as work:
                upload, delays = _gateway_run(instance, Path(work), kbit_s, args.link_mbit, sink)
            label = "vmgateway, unpaced" if not kbit_s else f"vmgateway, max_upload_kbit_s = {kbit_s} (80 %)"
            print(f"| {label} | {upload:.1f} | {megabytes / upload:.2f} | {statistics.median(delays):.2f} |"
                  f" {max(delays):.2f} |", flush=True)


if __name__ == "__main__":
    main()
