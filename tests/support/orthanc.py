"""Orthanc with its DICOMweb plugin, as the archive upstream (start it inside netns.loopback_only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import free_ports, stop_process

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_TIMEOUT_S = 60


class Orthanc:
    def __init__(self, folder: Path, modalities: dict[str, list[object]] | None = None,
                 ports: list[int] | None = None, **options: object) -> None:
        """`modalities`: Orthanc's DicomModalities (who may query and retrieve, and move targets);
        `ports`: its HTTP and DICOM ports, when chosen together with others' (so none coincide);
        `options`: further settings of Orthanc's configuration."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port, self.dicom_port = ports or free_ports(2)
        config: dict[str, Any] = {
            "Name": "vmgateway-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "StorageCompression": False, "Plugins": [DICOMWEB_PLUGIN], "HttpServerEnabled": True,
            "HttpPort": self.port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": True, "DicomModalities": modalities or {}, "DicomCheckModalityHost": True,
            "SaveJobs": False, "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        } | options
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self) -> Orthanc:
        started = threading.Event()
        self.proc = subprocess.Popen(["Orthanc", str(self.folder / "orthanc.json")], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

        def read(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.log.append(line.rstrip())
                if "Orthanc has started" in line:
                    started.set()
            started.set()  # it exited: start() reports that

        threading.Thread(target=read, args=(self.proc,), daemon=True).start()
        if not started.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            raise AssertionError("Orthanc did not start:\n" + "\n".join(self.log[-30:]))
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60, trust_env=False)

    def upload(self, path: Path, check: bool = True) -> bool:
        """Store one file through the REST API; whether Orthanc took it (`check`: raise if not)."""
        return self.upload_all([path], check)

    def upload_all(self, paths: list[Path], check: bool = True) -> bool:
        """Store files through the REST API on one connection; whether Orthanc took them all."""
        taken = True
        with self.rest() as rest:
            for path in paths:
                answer = rest.post("/instances", content=path.read_bytes())
                if check:
                    answer.raise_for_status()
                taken &= answer.is_success
        return taken

    def instance_count(self) -> int:
        with self.rest() as rest:
            return int(rest.get("/statistics").json()["CountInstances"])

    def file_of(self, sop_instance_uid: str) -> bytes:
        """The instance's file as Orthanc keeps it."""
        with self.rest() as rest:
            found = rest.post("/tools/lookup", content=sop_instance_uid).json()
            (instance,) = [f["ID"] for f in found if f["Type"] == "Instance"]
            return rest.get(f"/instances/{instance}/file").content
