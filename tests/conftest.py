"""The fixtures every test may ask for: gateways started and killed with the test, a crash file
system; what they are made of is in tests/support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess, free_ports, write_config


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Any]:
    """Factory: make_gateway(dicom={...}, storage={...}) -> a started GatewayProcess."""
    started: list[GatewayProcess] = []

    def make(start: bool = True, **sections: dict[str, Any]) -> GatewayProcess:
        data_dir = tmp_path / f"var{len(started)}"
        dicom_port, hl7_port, api_port = free_ports(3)
        dicom = {"bind": "127.0.0.1", "port": dicom_port} | sections.pop("dicom", {})
        hl7 = {"bind": "127.0.0.1", "port": hl7_port} | sections.pop("hl7", {})
        api = {"bind": "127.0.0.1", "port": api_port} | sections.pop("api", {})
        storage = {"data_dir": str(data_dir), "min_free_mb": 1} | sections.pop("storage", {})
        sections.setdefault("power", {"enabled": False})  # tests that watch a UPS start their own upsd
        config = write_config(
            tmp_path / f"gateway{len(started)}.toml",
            {"storage": storage, "dicom": dicom, "hl7": hl7, "api": api}
            | sections,
        )
        gateway = GatewayProcess(config, Path(str(storage["data_dir"])), int(str(dicom["port"])),
                                 int(str(hl7["port"])), int(str(api["port"])),
                                 ae_title=str(dicom.get("ae_title", "VM_GATEWAY")))
        started.append(gateway)
        if start:
            gateway.start()
        return gateway

    yield make
    for gateway in started:
        gateway.kill()


@pytest.fixture
def gateway(make_gateway: Any) -> GatewayProcess:
    started: GatewayProcess = make_gateway()
    return started


@pytest.fixture
def crashfs(tmp_path: Path) -> Iterator[Any]:
    """A file system that forgets what was not fsync'ed (tests/support/crashfs.py), mounted at tmp_path/data.
    Request it before make_gateway: it is then taken down after the gateways are stopped."""
    from tests.support.crashfs import CrashFs

    fs = CrashFs(tmp_path / "data", tmp_path / "disk").mount()
    yield fs
    fs.unmount()
