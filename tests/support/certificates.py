"""Test certificates: a CA and the leaves it signs, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM


def certificate(subject: str, issuer_key: Any, public_key: Any, issuer: str, ca: bool,
                ip: str | None = None, days: int = 2) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Issued:
    cert: Path
    key: Path


class CertificateAuthority:
    """A CA in `folder`; `issue()` writes a leaf (server: with 127.0.0.1 as its address)."""

    def __init__(self, folder: Path, name: str = "Vetmanager test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = folder / "ca.pem"
        self.cert.write_bytes(certificate(name, self.key, self.key.public_key(), name, ca=True).public_bytes(PEM))

    def issue(self, name: str, ip: str | None = "127.0.0.1", days: int = 2) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = certificate(name, self.key, key.public_key(), self.name, ca=False, ip=ip, days=days)
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        issued.cert.write_bytes(leaf.public_bytes(PEM))
        issued.key.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return issued
