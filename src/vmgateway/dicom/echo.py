"""C-ECHO from the box: is a modality or the PACS reachable, and does it accept us?"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

# A-ASSOCIATE-RJ reasons (PS3.8 9.3.4), keyed by (source, diagnostic).
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


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
    finally:
        pynetdicom_log.removeHandler(capture)
    where = f"{called_aet}@{host}:{port}"
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        kind = "permanently" if rj.result == 1 else "transiently"
        reason = _REJECT_REASONS.get((rj.result_source, rj.diagnostic), f"reason {rj.result_source}/{rj.diagnostic}")
        return EchoResult(False, f"association rejected {kind} by {where}: {reason}")
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
