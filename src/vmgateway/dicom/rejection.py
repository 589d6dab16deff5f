"""A-ASSOCIATE-RJ in words, for logs and for `vmgateway echo`."""

from __future__ import annotations

from pynetdicom.pdu_primitives import A_ASSOCIATE

# Reasons by (source, diagnostic), PS3.8 9.3.4.
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def describe_rejection(primitive: A_ASSOCIATE | None) -> str:
    """E.g. 'permanently: called AE title not recognised'."""
    if primitive is None:
        return "for an unknown reason"
    kind = "permanently" if primitive.result == 1 else "transiently"
    code = (int(primitive.result_source or 0), int(primitive.diagnostic or 0))
    return f"{kind}: {_REASONS.get(code, f'reason {code[0]}/{code[1]}')}"
