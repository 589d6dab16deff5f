"""PACS polling: an idle poll over 2,000 studies, and fetching 20 new studies by C-GET, by C-MOVE,
and with dcmtk's getscu, all against the same Orthanc in one run. Run by hand, as root:

    apt-get install -y dcmtk orthanc iproute2 util-linux
    .venv/bin/python bench/pacs_poll.py

Orthanc (the clinic's PACS) is loaded with 2,000 one-instance studies dated today (copies of
CT_small.dcm). The gateway fetches them all once (warm-up, not timed), then two idle polls are timed
(they find nothing new; the first looks into each study once, by its series' counts, the second
only lists the studies). Then 20 new studies of 10 instances are added and fetched by one timed
poll with pacs.retrieve = "get"; 20 more with "move"; 20 more with `getscu` (one study-level C-GET
per study, one after the other, into a folder). Everything in a private network namespace with
only loopback. Prints a Markdown table.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.dicomdata import PYDICOM_FILES  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from netns import rerun_in_private_network, stopped_at_exit  # noqa: E402

HTTP_PORT, PACS_PORT, DICOM_PORT, HL7_PORT, API_PORT = 18042, 11104, 11112, 12575, 13000
ENV = os.environ | {"TCP_NODELAY": "1"}
OLD_STUDIES, NEW_STUDIES, NEW_INSTANCES = 2000, 20, 10


def _orthanc(workdir: Path) -> subprocess.Popen[bytes]:
    config = {
        "Name": "pacs", "StorageDirectory": str(workdir / "storage"), "IndexDirectory": str(workdir / "index"),
        "HttpPort": HTTP_PORT, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": PACS_PORT, "SaveJobs": False,
        "DicomModalities": {"gateway": ["VM_GATEWAY", "127.0.0.1", DICOM_PORT],
                            "getscu": ["GETSCU", "127.0.0.1", 104]},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(["Orthanc", str(workdir / "orthanc.json")], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _wait(lambda: httpx.get(f"http://127.0.0.1:{HTTP_PORT}/system", timeout=1, trust_env=False))
    return process


def _wait(probe: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            probe()  # type: ignore[operator]
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _studies(count: int, instances: int) -> list[bytes]:
    """`count` studies of `instances` copies of CT_small.dcm, dated today, as file bytes."""
    template = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    template.StudyDate = date.today().strftime("%Y%m%d")
    files = []
    for _ in range(count):
        template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
        for number in range(instances):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            template.InstanceNumber = number + 1
            with tempfile.SpooledTemporaryFile() as out:
                template.save_as(out, enforce_file_format=True)
                out.seek(0)
                files.append(out.read())
    return files


def _upload(files: list[bytes]) -> list[str]:
    """Into Orthanc; returns the Study Instance UIDs."""
    with httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", trust_env=False, timeout=60) as rest:
        def post(data: bytes) -> str:
            return str(rest.post("/instances", content=data).raise_for_status().json()["ParentStudy"])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, files))
    return sorted({str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).StudyInstanceUID)
                   for f in files})


def main() -> None:
    rerun_in_private_network()
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp, ExitStack() as running:
        workdir = Path(tmp)
        running.enter_context(stopped_at_exit(_orthanc(workdir)))
        config = workdir / "gateway.toml"
        config.write_text(
            f'[storage]\ndata_dir = "{workdir / "var"}"\nmin_free_mb = 64\n'
            f'[dicom]\nbind = "127.0.0.1"\nport = {DICOM_PORT}\n[hl7]\nbind = "127.0.0.1"\nport = {HL7_PORT}\n'
            f'[api]\nbind = "127.0.0.1"\nport = {API_PORT}\n[power]\nenabled = false\n'
            f'[pacs]\nhost = "127.0.0.1"\nport = {PACS_PORT}\nae_title = "ORTHANC"\nlookback_days = 1\n'
            f'timeout_s = 60\n')
        vmgateway = [sys.executable, "-m", "vmgateway"]
        token = subprocess.run([*vmgateway, "token", "create", "bench", "--config", str(config)],
                               capture_output=True, text=True, check=True).stdout.strip()
        running.enter_context(stopped_at_exit(subprocess.Popen([*vmgateway, "run", "--config", str(config)],
                                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        api = httpx.Client(base_url=f"https://127.0.0.1:{API_PORT}", verify=False, trust_env=False, timeout=3600,
                           headers={"Authorization": f"Bearer {token}"})
        rows = []
        _wait(lambda: api.get("/api/v1/health"))
        _upload(_studies(OLD_STUDIES, 1))
        warm = api.post("/api/v1/pacs/poll").json()
        assert warm["fetched"] == OLD_STUDIES, warm

        for case in ("first idle poll", "idle poll"):  # the first looks into each study once (series counts)
            began = time.perf_counter()
            idle = api.post("/api/v1/pacs/poll").json()
            rows.append((f"{case}, {OLD_STUDIES} studies held", "vmgateway", time.perf_counter() - began,
                         f"{idle['studies']} study-level C-FIND responses, {idle['fetched']} fetched"))

        for mode in ("get", "move"):
            api.put("/api/v1/site/pacs", json={"host": "127.0.0.1", "port": PACS_PORT, "ae_title": "ORTHANC",
                                               "lookback_days": 1, "timeout_s": 60, "retrieve": mode})
            _upload(_studies(NEW_STUDIES, NEW_INSTANCES))
            began = time.perf_counter()
            result = api.post("/api/v1/pacs/poll").json()
            assert result["ok"] and result["missing"] == NEW_STUDIES * NEW_INSTANCES, result
            rows.append((f"{NEW_STUDIES} new studies × {NEW_INSTANCES}", f"vmgateway, C-{mode.upper()}",
                         time.perf_counter() - began, f"{result['studies']} studies listed"))

        new = _upload(_studies(NEW_STUDIES, NEW_INSTANCES))
        out = workdir / "getscu"
        out.mkdir()
        began = time.perf_counter()
        for study in new:
            subprocess.run(["getscu", "-aet", "GETSCU", "-aec", "ORTHANC", "-S", "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={study}", "-od", str(out), "127.0.0.1", str(PACS_PORT)],
                           env=ENV, check=True, capture_output=True, timeout=600)
        rows.append((f"{NEW_STUDIES} new studies × {NEW_INSTANCES}", "dcmtk getscu (study UIDs known)",
                     time.perf_counter() - began, f"{len(list(out.iterdir()))} files, no C-FIND, no fsync"))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| case | who | seconds | notes |\n| --- | --- | ---: | --- |")
    for case, who, seconds, notes in rows:
        print(f"| {case} | {who} | {seconds:.2f} | {notes} |")


if __name__ == "__main__":
    main()
