"""The keys a box trusts to sign its releases: PEM files in /etc/vmgateway/trusted-keys/.

Standard library only (the bootstrap uses it on a bare box).
"""

from __future__ import annotations

from pathlib import Path

from vmgateway.bundle import signature
from vmgateway.files import write_atomically


class UntrustedKey(Exception):
    """A trusted-keys file that is not an Ed25519 public key: refused rather than skipped."""


def trusted_keys(folder: Path) -> dict[str, bytes]:
    """File name -> key, for every *.pem in `folder` (none when it does not exist)."""
    keys = {}
    for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        try:
            keys[path.name] = signature.public_key_from_pem(path.read_text())
        except (signature.NotAPublicKey, UnicodeDecodeError) as exc:
            raise UntrustedKey(f"{path}: {exc}") from None
    return keys


def trust(folder: Path, key: bytes) -> Path:
    """Add `key` to the trusted keys, named by its fingerprint; return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (signature.fingerprint(key).replace(":", "-") + ".pem")
    write_atomically(path, signature.public_key_to_pem(key))
    return path
