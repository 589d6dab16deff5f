"""Push forwarding: vmgateway's STOW-RS transfers into Orthanc beside curl posting the same
instances to the same Orthanc, in one run. Run by hand, as root:

    apt-get install -y dcmtk orthanc orthanc-dicomweb curl iproute2 util-linux
    .venv/bin/python bench/push_forward.py [--repeat 3]

Datasets as in bench/dicom_ingest.py: 500 copies of CT_small.dcm (one study) and 50 synthetic
multi-frame instances of 8 MiB (a study each). The gateway first receives a dataset with
transfers off (not timed), then transfers are switched on and the time until the journal says
everything is delivered is measured. curl is the ceiling: the same batches the gateway makes
(instances of one study, at most 50 or 64 MB a request), as prepared multipart bodies, posted
with the same concurrency (2) by `xargs -P 2 curl`. Orthanc starts empty for every run.
Everything runs in a private network namespace with only loopback.
Prints a Markdown table: median instances/s and MB/s over the repeats; for vmgateway the
highest RSS seen while it forwarded, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from dicom_ingest import ENV, _datasets  # noqa: E402
from netns import rerun_in_private_network, stopped_at_exit  # noqa: E402

HTTP_PORT, DICOM_PORT, HL7_PORT, API_PORT = 18042, 11112, 12575, 13000
CONCURRENCY, MAX_INSTANCES, MAX_BYTES = 2, 50, 64 * 2**20
TIMEOUT_S = 600


def _orthanc(workdir: Path) -> subprocess.Popen[bytes]:
    config = json.loads((ROOT / "bench" / "orthanc.json").read_text())
    config |= {"StorageDirectory": str(workdir / "storage"), "IndexDirectory": str(workdir / "index"),
               "DicomServerEnabled": False, "HttpPort": HTTP_PORT,
               "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
               "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (workdir / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(["Orthanc", str(workdir / "orthanc.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{HTTP_PORT}/system", timeout=1, trust_env=False)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("Orthanc did not start")


def _stored() -> int:
    answer = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/statistics", timeout=10, trust_env=False)
    return int(answer.json()["CountInstances"])


def _batches(files: list[Path]) -> list[list[Path]]:
    """The gateway's batching: consecutive instances of one study, within the count and size limits."""
    batches: list[list[Path]] = []
    size, study = 0, None
    for path in files:
        this_study = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
        length = path.stat().st_size
        if not batches or this_study != study or len(batches[-1]) >= MAX_INSTANCES or size + length > MAX_BYTES:
            batches.append([])
            size, study = 0, this_study
        batches[-1].append(path)
        size += length
    return batches


def _curl_run(files: list[Path], workdir: Path) -> tuple[float, float]:
    bodies = []
    for number, batch in enumerate(_batches(files)):
        boundary = uuid.uuid4().hex
        body = workdir / f"batch{number:04d}.{boundary}"
        with open(body, "wb") as out:
            for path in batch:
                out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
                out.write(path.read_bytes())
                out.write(b"\r\n")
            out.write(f"--{boundary}--\r\n".encode())
        bodies.append(body)
    with stopped_at_exit(_orthanc(workdir)):
        script = ('curl -sS -o /dev/null -w "%{http_code}\\n" -X POST --data-binary @"$1" -H "Expect:" '
                  '-H "Content-Type: multipart/related; type=\\"application/dicom\\"; boundary=${1##*.}" '
                  f'-H "Accept: application/dicom+json" http://127.0.0.1:{HTTP_PORT}/dicom-web/studies')
        began = time.perf_counter()
        done = subprocess.run(["xargs", "-n", "1", "-P", str(CONCURRENCY), "sh", "-c", script, "sh"],
                              input="\n".join(map(str, bodies)), capture_output=True, text=True, timeout=TIMEOUT_S)
        seconds = time.perf_counter() - began
        if set(done.stdout.split()) != {"200"} or _stored() != len(files):
            raise RuntimeError(f"curl run incomplete: {done.stdout[-300:]} {done.stderr[-300:]}")
    return seconds, float("nan")  # curl's memory is not the point: it is the ceiling for speed


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _delivered(journal: Path) -> int:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM items WHERE state = 'delivered'").fetchone()[0])


def start_gateway(config: Path, api_port: int, timeout_s: float = 60) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`vmgateway run` on `config`, a token of its own, and an API client once the API answers."""
    vmgateway = [sys.executable, "-m", "vmgateway"]
    token = subprocess.run([*vmgateway, "token", "create", "bench", "--config", str(config)],
                           capture_output=True, text=True, check=True).stdout.strip()
    gateway = subprocess.Popen([*vmgateway, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    api = httpx.Client(base_url=f"https://127.0.0.1:{api_port}", verify=False, trust_env=False, timeout=timeout_s,
                       headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 30
    while True:
        try:
            api.get("/api/v1/health")
            return gateway, api
        except httpx.HTTPError:
            if time.monotonic() > deadline or gateway.poll() is not None:
                gateway.terminate()
                gateway.wait(60)
                raise
            time.sleep(0.05)


def _gateway_run(files: list[Path], workdir: Path) -> tuple[float, float]:
    with stopped_at_exit(_orthanc(workdir)):
        return _deliver_through_gateway(files, workdir)


def _deliver_through_gateway(files: list[Path], workdir: Path) -> tuple[float, float]:
    config = workdir / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{workdir / "var"}"\nmin_free_mb = 64\n'
        f'[dicom]\nbind = "127.0.0.1"\nport = {DICOM_PORT}\nrequire_called_ae = false\n'
        f'[hl7]\nbind = "127.0.0.1"\nport = {HL7_PORT}\n[api]\nbind = "127.0.0.1"\nport = {API_PORT}\n'
        f'[power]\nenabled = false\n'
        f'[transfers]\nmode = "push"\ndicomweb_url = "http://127.0.0.1:{HTTP_PORT}/dicom-web"\n'
        f'allow_plain_http = true\nconcurrency = {CONCURRENCY}\n'
    )
    gateway, api = start_gateway(config, API_PORT)
    with stopped_at_exit(gateway):
        sent = subprocess.run(["storescu", "+sd", "-aec", "VM_GATEWAY", "127.0.0.1", str(DICOM_PORT),
                               str(files[0].parent)], env=ENV, capture_output=True, timeout=TIMEOUT_S)
        if sent.returncode != 0:
            raise RuntimeError("storescu failed")
        journal = workdir / "var" / "journal.sqlite"
        peak = 0.0
        began = time.perf_counter()
        api.post("/api/v1/transfers/activate").raise_for_status()
        while _delivered(journal) < len(files):
            peak = max(peak, _rss_mb(gateway.pid))
            if time.perf_counter() - began > TIMEOUT_S:
                raise RuntimeError("the gateway did not deliver everything in time")
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        if _stored() != len(files):
            raise RuntimeError(f"Orthanc holds {_stored()} of {len(files)}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rerun_in_private_network()
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| dataset | sender | instances/s | MB/s | peak RSS while forwarding (MB) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, files in _datasets().items():
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        for name, run in (("curl (ceiling)", _curl_run), ("vmgateway", _gateway_run)):
            results = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
                    results.append(run(files, Path(tmp)))
            seconds = statistics.median(s for s, _ in results)
            peak = max(p for _, p in results)
            shown = "–" if peak != peak else f"{peak:.0f}"
            print(f"| {label} | {name} | {len(files) / seconds:.0f} | {megabytes / seconds:.0f} | {shown} |",
                  flush=True)


if __name__ == "__main__":
    main()
