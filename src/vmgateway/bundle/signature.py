"""Ed25519 signatures (RFC 8032): verification in pure Python, public keys in PEM.

Why our own verifier: the first install runs on a bare Debian 12 whose python3 has no Ed25519
(neither hashlib nor ssl offers it), and a verifier taken from the bundle being verified (its
`cryptography` wheel) would prove nothing. Verification is ~60 lines of integer arithmetic and is
checked against `cryptography` in the tests; signing, done where bundles are built, uses
`cryptography`. Verifying one manifest takes a few milliseconds. Not constant-time, which
verification of public data does not need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""DER of an Ed25519 SubjectPublicKeyInfo up to the 32 key bytes (RFC 8410), as `openssl pkey -pubout` writes."""

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


class NotAPublicKey(ValueError):
    """Not an Ed25519 public key in PEM."""


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _times(scalar: int, point: _Point) -> _Point:
    result: _Point = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _same(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _x_of(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _point(encoded: bytes) -> _Point | None:
    y = int.from_bytes(encoded, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _x_of(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _x_of(_GY, 0)
assert _GX is not None
_BASE: _Point = (_GX, _GY, 1, _GX * _GY % _P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message` (RFC 8032 5.1.7)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a, r = _point(public_key), _point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % _L
    return _same(_times(s, _BASE), _add(r, _times(h, a)))


def public_key_from_pem(text: str) -> bytes:
    """The 32 key bytes of a PEM `PUBLIC KEY` holding an Ed25519 key."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        if lines and "PRIVATE KEY" in lines[0]:
            raise NotAPublicKey("this is a private key: give the public one (openssl pkey -in KEY.pem -pubout)")
        raise NotAPublicKey("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise NotAPublicKey("the PEM public key is not valid base64") from None
    if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
        raise NotAPublicKey("not an Ed25519 public key (openssl genpkey -algorithm ed25519 makes one)")
    return der[len(_SPKI_PREFIX):]


def public_key_to_pem(key: bytes) -> str:
    body = base64.b64encode(_SPKI_PREFIX + key).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def fingerprint(key: bytes) -> str:
    """How a key is named to people: short enough to compare by eye, long enough to be unique."""
    return "ed25519:" + hashlib.sha256(key).hexdigest()[:16]
