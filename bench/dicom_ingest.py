"""C-STORE ingest: vmgateway beside dcmtk's storescp and Orthanc, in one run. Run by hand, as root:

    apt-get install -y dcmtk orthanc iproute2 util-linux
    .venv/bin/python bench/dicom_ingest.py [--repeat 3] [--only vmgateway] [--associations 4] [--idle 20]

The client is `storescu` (TCP_NODELAY=1) on one association, or the files split over
`--associations` storescu processes at once. Datasets: (a) 500 copies of pydicom's CT_small.dcm
with fresh UIDs, (b) 50 synthetic multi-frame instances of ~8 MB. The disk's own limits
(bench/disk_limit.py) are measured at the start of the same run. With `--idle N`, each
receiver also holds N open, idle associations for 10 s and its CPU time is reported.
A bare pynetdicom receiver (bench/bare_scp.py: chunked receive, fsync, nothing else) runs
as a reference: the ceiling for any receiver built on pynetdicom. Each receiver starts
fresh for every run (an empty folder), so nothing is a duplicate.
Orthanc and storescp cannot bind to loopback alone, so the script re-runs itself inside a
private network namespace (`unshare -n`) holding only loopback: no traffic leaves the machine.
Prints a Markdown table: median instances/s and MB/s over the repeats, and the receiver's
peak RSS (VmHWM) over all its runs of that dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.dicomdata import copies_of_ct_small, secondary_capture  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from disk_limit import dd_mb_s, fdatasync_ms  # noqa: E402
from netns import rerun_in_private_network  # noqa: E402

DATA = ROOT / "bench" / "out" / "data"
ENV = os.environ | {"TCP_NODELAY": "1"}  # dcmtk 3.6.7 (and Orthanc, built on it) keep Nagle otherwise
PORT, HTTP_PORT = 11112, 18042
READY_TIMEOUT_S = 30


@dataclass
class Receiver:
    name: str
    start: Callable[[Path], subprocess.Popen[bytes]]
    stored: Callable[[Path], int]
    """How many instances the receiver holds after a run (a run that lost some is void)."""


def _vmgateway(**dicom: str | int) -> Callable[[Path], subprocess.Popen[bytes]]:
    """The gateway with its defaults but for `dicom` settings (room for the idle associations)."""

    def start(workdir: Path) -> subprocess.Popen[bytes]:
        config = workdir / "gateway.toml"
        settings = {"bind": "127.0.0.1", "port": PORT, "require_called_ae": False, "max_associations": 40,
                    "max_associations_per_peer": 40} | dicom
        config.write_text(
            f'[storage]\ndata_dir = "{workdir / "var"}"\nmin_free_mb = 64\n[dicom]\n'
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
        )
        return subprocess.Popen(
            [sys.executable, "-m", "vmgateway", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    return start


def _vmgateway_stored(workdir: Path) -> int:
    import sqlite3

    with sqlite3.connect(workdir / "var" / "journal.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])


def _storescp(workdir: Path) -> subprocess.Popen[bytes]:
    (workdir / "out").mkdir()
    return subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "+xa", "-od", str(workdir / "out"), str(PORT)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _orthanc(workdir: Path) -> subprocess.Popen[bytes]:
    config = json.loads((ROOT / "bench" / "orthanc.json").read_text())
    config |= {
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "DicomPort": PORT,
        "HttpPort": HTTP_PORT,
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(["Orthanc", str(path)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _orthanc_stored(workdir: Path) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/statistics", timeout=10) as answer:
        return int(json.load(answer)["CountInstances"])


def _bare_pynetdicom(workdir: Path) -> subprocess.Popen[bytes]:
    (workdir / "out").mkdir()
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_scp.py"), str(PORT), str(workdir / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _files_in_out(workdir: Path) -> int:
    return sum(1 for p in (workdir / "out").iterdir() if not p.name.startswith("tmp"))


RECEIVERS = [
    Receiver("vmgateway, asyncio engine", _vmgateway(engine="asyncio"), _vmgateway_stored),
    Receiver("vmgateway, pynetdicom engine", _vmgateway(engine="pynetdicom"), _vmgateway_stored),
    Receiver("pynetdicom alone (reference)", _bare_pynetdicom, _files_in_out),
    Receiver("dcmtk storescp", _storescp, _files_in_out),
    Receiver("Orthanc", _orthanc, _orthanc_stored),
]


def _wait_listening(process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", PORT)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("receiver did not listen in time")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _datasets() -> dict[str, list[Path]]:
    small, large = DATA / "small", DATA / "large"
    if len(list(small.glob("*.dcm"))) != 500:
        shutil.rmtree(small, ignore_errors=True)
        copies_of_ct_small(small, 500)
    if len(list(large.glob("*.dcm"))) != 50:
        shutil.rmtree(large, ignore_errors=True)
        large.mkdir(parents=True)
        for number in range(50):
            secondary_capture(large / f"mf{number:03d}.dcm", frames=8, rows=1024, columns=1024)
    return {
        "500 × CT_small (39 KB)": sorted(small.glob("*.dcm")),
        "50 × multi-frame (8 MB)": sorted(large.glob("*.dcm")),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _idle_cpu_percent(receiver: Receiver, associations: int, seconds: float = 10) -> str:
    """Per cent of one core the receiver uses while `associations` sit open and idle."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        process = receiver.start(Path(tmp))
        opened = []
        try:
            _wait_listening(process)
            ae = AE(ae_title="IDLE")
            ae.add_requested_context(Verification)
            ae.network_timeout, ae.acse_timeout = 600, 10
            opened = [ae.associate("127.0.0.1", PORT, ae_title="ANY-SCP") for _ in range(associations)]
            if not all(a.is_established for a in opened):
                return f"accepted {sum(a.is_established for a in opened)} of {associations}"
            time.sleep(1)  # the associations settle
            before = _cpu_seconds(process.pid)
            time.sleep(seconds)
            used = _cpu_seconds(process.pid) - before
        finally:
            for association in opened:
                association.abort()
            process.terminate()
            process.wait(60)
    return f"{100 * used / seconds:.2f}"


def _one_run(receiver: Receiver, files: list[Path], associations: int) -> tuple[float, float]:
    """Seconds for storescu to send `files` (split over `associations` at once), and the
    receiver's peak RSS in MB."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        workdir = Path(tmp)
        process = receiver.start(workdir)
        try:
            _wait_listening(process)
            shares = [files[start::associations] for start in range(associations)]
            began = time.perf_counter()
            senders = [subprocess.Popen(["storescu", "-aec", "ANY-SCP", "127.0.0.1", str(PORT), *map(str, share)],
                                        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                       for share in shares]
            errors = [sender.communicate(timeout=600)[1] for sender in senders]
            seconds = time.perf_counter() - began
            peak = _peak_rss_mb(process.pid)
            if any(sender.returncode != 0 for sender in senders):
                raise RuntimeError(f"storescu failed against {receiver.name}: {' '.join(errors)[-500:]}")
            stored = receiver.stored(workdir)
            if stored != len(files):
                raise RuntimeError(f"{receiver.name} holds {stored} of {len(files)} instances")
        finally:
            process.terminate()
            process.wait(60)
    return seconds, peak


def _disk(when: str) -> None:
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        sync_ms, rates = fdatasync_ms(Path(tmp)), [dd_mb_s(Path(tmp)) for _ in range(3)]
    print(f"{when}: 4 KiB write + fdatasync {sync_ms:.3f} ms; dd bs=8M count=64 conv=fdatasync"
          f" {statistics.median(rates):.0f} MB/s (runs: {', '.join(f'{r:.0f}' for r in rates)})\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=[r.name for r in RECEIVERS], action="append")
    parser.add_argument("--associations", type=int, action="append",
                        help="also send the small instances over this many associations at once")
    parser.add_argument("--idle", type=int, default=0, help="measure CPU with this many idle associations")
    args = parser.parse_args()
    rerun_in_private_network()
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    datasets = _datasets()
    receivers = [r for r in RECEIVERS if not args.only or r.name in args.only]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    _disk("disk at the start")
    print("| dataset | associations | receiver | instances/s | MB/s | peak RSS (MB) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    cases = [(label, files, 1) for label, files in datasets.items()]
    small_label, small = next(iter(datasets.items()))
    cases[1:1] = [(small_label, small, count) for count in args.associations or []]
    for label, files, associations in cases:
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        # Round by round, every receiver once per round: this machine's speed drifts by minutes,
        # and a drift must not fall on one receiver's runs only.
        rounds = [[_one_run(receiver, files, associations) for receiver in receivers] for _ in range(args.repeat)]
        for index, receiver in enumerate(receivers):
            runs = [results[index] for results in rounds]
            seconds = statistics.median(s for s, _ in runs)
            peak = max(p for _, p in runs)
            print(
                f"| {label} | {associations} | {receiver.name} | {len(files) / seconds:.0f} | {megabytes / seconds:.0f}"
                f" | {peak:.0f} |", flush=True,
            )
    _disk("\ndisk at the end")
    if args.idle:
        print(f"\n| receiver | CPU with {args.idle} idle associations (% of a core) |\n| --- | ---: |")
        for receiver in receivers:
            if receiver.name != "dcmtk storescp":  # it serves one association at a time: the rest wait unaccepted
                print(f"| {receiver.name} | {_idle_cpu_percent(receiver, args.idle)} |", flush=True)


if __name__ == "__main__":
    main()
