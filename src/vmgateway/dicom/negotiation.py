"""Whether to accept an A-ASSOCIATE-RQ, and with which presentation contexts — without I/O.

The decision is pynetdicom's, made with its own pure parts (PDU decoding and encoding,
`negotiate_unrestricted`) on the same supported contexts as the pynetdicom engine, so that
both engines accept the same associations in the same way (tests/test_dicom_engines.py gives
both the same requests). Rejections, in pynetdicom's order of precedence (PS3.8 9.3.4):
calling AE title not allowed (permanent, 1/3), called AE title not ours (permanent, 1/7), no
room — the association limit reached, or the gateway draining (transient, local limit
exceeded, 3/2). Storage SOP classes, private ones (common on ultrasound) included, are accepted
in the transfer syntax the sender prefers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydicom.uid import AllTransferSyntaxes
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_unrestricted
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)

from vmgateway import __version__

IMPLEMENTATION_CLASS_UID = "2.25.102259815059769271777226062312498444930"
"""The gateway's own, made once from a UUID (PS3.5 B.2)."""
IMPLEMENTATION_VERSION_NAME = f"VMGATEWAY_{__version__}"[:16]
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

PERMANENT, TRANSIENT = 1, 2
SERVICE_USER, SERVICE_PROVIDER_PRESENTATION = 1, 3
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED, LOCAL_LIMIT_EXCEEDED = 3, 7, 2


def supported_contexts() -> list[PresentationContext]:
    """Verification in any transfer syntax, the Modality Worklist's C-FIND and MPPS; storage is
    accepted unrestricted beside them."""
    return [build_context(Verification, list(AllTransferSyntaxes)), build_context(ModalityWorklistInformationFind),
            build_context(ModalityPerformedProcedureStep)]


@dataclass(frozen=True)
class Policy:
    ae_title: str
    require_called_ae: bool
    allowed_calling_aets: tuple[str, ...]
    """Empty: anyone may call."""
    max_pdu: int
    """The longest P-DATA-TF we take (announced in the A-ASSOCIATE-AC)."""


@dataclass(frozen=True)
class Accepted:
    pdu: bytes
    """The A-ASSOCIATE-AC to send."""
    calling_ae: str
    contexts: dict[int, PresentationContext]
    """The accepted presentation contexts by ID, each with its one transfer syntax."""
    peer_max_pdu: int
    """The longest P-DATA-TF the peer takes (0: no limit)."""


@dataclass(frozen=True)
class Rejected:
    pdu: bytes
    """The A-ASSOCIATE-RJ to send."""
    calling_ae: str
    called_ae: str
    primitive: A_ASSOCIATE
    """The rejection, for vmgateway.dicom.rejection.describe_rejection."""


class UnreadableRequest(ValueError):
    """An A-ASSOCIATE-RQ that cannot be decoded: answered by A-ABORT."""


@lru_cache(maxsize=32)
def decide(request_pdu: bytes, policy: Policy, room: bool) -> Accepted | Rejected:
    """Accept or reject the A-ASSOCIATE-RQ `request_pdu`; `room` is false at the association
    limit or while draining. Raises UnreadableRequest.

    Remembered for the last few requests: a modality sends the same request each time, and
    deciding one that proposes 128 presentation contexts (storescu's default) took 0.1–0.25 s
    here — pynetdicom validates every UID with regular expressions. What it returns is shared:
    never changed."""
    try:
        request = A_ASSOCIATE_RQ()
        request.decode(request_pdu)
        asked = request.to_primitive()
        calling, called = asked.calling_ae_title, asked.called_ae_title
        proposed = asked.presentation_context_definition_list
    except Exception as exc:  # pynetdicom's decoders raise whatever the bytes provoke
        raise UnreadableRequest(f"unreadable A-ASSOCIATE-RQ: {exc}") from exc
    rejection: tuple[int, int, int] | None = None
    if policy.allowed_calling_aets and calling not in [aet.strip() for aet in policy.allowed_calling_aets]:
        rejection = (PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
    if policy.require_called_ae and called != policy.ae_title.strip():
        rejection = (PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNISED)
    if not room:
        rejection = (TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
    if rejection is not None:
        answer = A_ASSOCIATE()
        answer.result, answer.result_source, answer.diagnostic = rejection
        return Rejected(A_ASSOCIATE_RJ(answer).encode(), calling, called, answer)
    user_items = asked.user_information
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role) for item in user_items
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
    peer_max = next((item.maximum_length_received for item in user_items
                     if isinstance(item, MaximumLengthNotification)), 0)
    try:
        results, reply_roles = negotiate_unrestricted(proposed, supported_contexts(), roles)  # type: ignore[arg-type]
    except Exception as exc:  # e.g. a context without an abstract syntax
        raise UnreadableRequest(f"unusable presentation contexts: {exc}") from exc
    accepted = [context for context in results if context.result == 0x00]
    answer = A_ASSOCIATE()
    answer.application_context_name = APPLICATION_CONTEXT
    answer.calling_ae_title, answer.called_ae_title = calling, called
    answer.result, answer.result_source = 0x00, 0x01
    answer.presentation_context_definition_results_list = accepted + [c for c in results if c.result != 0x00]
    length = MaximumLengthNotification()
    length.maximum_length_received = policy.max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    answer.user_information = [length, uid, version, *reply_roles]
    return Accepted(A_ASSOCIATE_AC(answer).encode(), calling,
                    {int(context.context_id or 0): context for context in accepted}, int(peer_max or 0))
