"""The API's TLS certificate: the configured one, or a self-signed one made at first start.

Vetmanager pins the certificate by its SHA-256 fingerprint (logged at every start), so a
self-signed certificate is as trustworthy as a CA-signed one here, and needs no internet.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
import sys
from pathlib import Path

from vmgateway.files import write_atomically

PINNED_NAME = "vmgateway"
"""The DNS name in every self-signed API certificate (the same on every box: it is pinned, not looked up)."""


def certificate_files(folder: Path) -> tuple[Path, Path]:
    return folder / "api-cert.pem", folder / "api-key.pem"


async def ensure_self_signed(folder: Path, common_name: str) -> tuple[Path, Path]:
    """The (certificate, key) files in `folder`, created on first use (key mode 0600).

    Made by a short-lived child process: cryptography adds ~12 MB to a process for good, and
    the gateway needs it once per box.
    """
    cert_path, key_path = certificate_files(folder)
    if not (cert_path.exists() and key_path.exists()):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vmgateway.api.tls", str(folder), common_name, stderr=asyncio.subprocess.PIPE
        )
        _, error = await child.communicate()
        if child.returncode != 0:
            raise OSError(f"could not create the API certificate: {error.decode(errors='replace')[-500:]}")
    return cert_path, key_path


async def expires_at(cert_path: Path) -> float:
    """When the certificate ends (Unix time), read by a short-lived child for the same reason."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vmgateway.api.tls", "--expires", str(cert_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, error = await child.communicate()
    if child.returncode != 0:
        raise OSError(f"could not read the API certificate {cert_path}: {error.decode(errors='replace')[-500:]}")
    return float(out)


def _expires(cert_path: Path) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc.timestamp()


def _create(folder: Path, common_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = certificate_files(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # A name to verify it by: Prometheus (Go) ignores the common name, so a job pinning this
        # certificate (ca_file) says server_name = vmgateway (monitoring/README.md).
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PINNED_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Durable before the gateway uses them: a power cut soon after the first start once left an
    # empty certificate, and a box that could never start its API again (tests/test_power_cuts.py).
    write_atomically(key_path, key_bytes, mode=0o600)
    write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o600)


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the certificate's DER form, as `AB:CD:…` (what browsers and curl show)."""
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


if __name__ == "__main__":
    if sys.argv[1] == "--expires":
        print(_expires(Path(sys.argv[2])))
    else:
        _create(Path(sys.argv[1]), sys.argv[2])
