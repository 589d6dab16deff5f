"""dcmtk's storescu and pynetdicom as the senders of the durability tests: which C-STOREs the
sender saw answered Success, an association held open."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.support.gateway import DCMTK_ENV, GatewayProcess


def storescu_acknowledged(gateway: GatewayProcess, files: list[Path], *, on_ack: Any, after: int) -> list[Path]:
    """Run storescu over `files`; call `on_ack()` once `after` instances were acknowledged.
    Returns the files whose C-STORE the client saw answered with Success."""
    transfer = subprocess.Popen(
        ["storescu", "-v", "-nh", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *map(str, files)],
        env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert transfer.stdout is not None
    acknowledged: list[Path] = []
    sending: Path | None = None
    for line in transfer.stdout:
        if line.startswith("I: Sending file: "):
            sending = Path(line.removeprefix("I: Sending file: ").strip())
        elif "Received Store Response (Success)" in line:
            assert sending is not None
            acknowledged.append(sending)
            if len(acknowledged) == after:
                on_ack()
    transfer.wait(60)
    return acknowledged


def hold_association(port: int) -> Any:
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="VM_GATEWAY")
    assert assoc.is_established
    return assoc
