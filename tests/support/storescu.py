"""Senders of instances, as the tests play them: dcmtk's storescu and which of its C-STOREs were
answered Success, an association held open, and a file sent as it is, however broken."""

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


def send_as_it_is(gateway: GatewayProcess, path: Path, syntax: str = "1.2.840.10008.1.2.1") -> Any:
    """C-STORE of the file's bytes as they are, in transfer syntax `syntax` (pynetdicom's chunked
    send: no re-encoding, no check — what a broken or hostile sender sends)."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    _config.STORE_SEND_CHUNKED_DATASET = True
    validators = _config.VALIDATORS
    _config.VALIDATORS = validators | {"UI": lambda value: (True, "")}  # an attacker checks nothing
    try:
        ae = AE(ae_title="HOSTILE")
        ae.add_requested_context(CTImageStorage, syntax)
        association = ae.associate("127.0.0.1", gateway.port, ae_title="VM_GATEWAY")
        assert association.is_established
        try:
            return association.send_c_store(path)
        finally:
            association.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        _config.VALIDATORS = validators
