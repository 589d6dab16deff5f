"""C-ECHO from the box: is a modality or the PACS reachable, and does it accept us?"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from vmgateway.addresses import local_address
from vmgateway.config import DicomConfig
from vmgateway.dicom.rejection import describe_rejection


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str


class _Capture(logging.Handler):
    """pynetdicom only logs why a TCP connection failed; keep that line for our answer."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("TCP Initialisation Error:"):
            self.reason = text.removeprefix("TCP Initialisation Error:").strip()


def echo(host: str, port: int, calling_aet: str, called_aet: str, timeout: float = 10) -> EchoResult:
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    capture = _Capture()
    pynetdicom_log = logging.getLogger("pynetdicom")
    pynetdicom_log.addHandler(capture)
    try:
        assoc = ae.associate(host, port, ae_title=called_aet)
    except (OSError, ValueError) as exc:  # e.g. a host name that cannot even be looked up
        return EchoResult(False, f"cannot connect to {host}:{port}: {exc}")
    finally:
        pynetdicom_log.removeHandler(capture)
    where = f"{called_aet}@{host}:{port}"
    if assoc.is_rejected:
        rejection = describe_rejection(assoc.acceptor.primitive)
        return EchoResult(False, f"association rejected by {where} {rejection}")
    if capture.reason:
        return EchoResult(False, f"cannot connect to {host}:{port}: {capture.reason}")
    if assoc.is_aborted:
        return EchoResult(False, f"association aborted by {where}")
    if not assoc.is_established:
        return EchoResult(False, f"no answer to the association request from {where} within {timeout:g} s")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status:
        return EchoResult(False, f"no C-ECHO response from {where} within {timeout:g} s")
    if status.Status != 0x0000:
        return EchoResult(False, f"C-ECHO to {where} answered status 0x{status.Status:04X}")
    return EchoResult(True, f"C-ECHO to {where} succeeded")


def echo_own_listener(config: DicomConfig, calling_aet: str, timeout: float = 10) -> EchoResult:
    """C-ECHO to the gateway's own listener, from the box (as an allowed caller, where only some are)."""
    calling = config.allowed_calling_aets[0] if config.allowed_calling_aets else calling_aet
    return echo(local_address(config.bind), config.port, calling, config.ae_title, timeout)
