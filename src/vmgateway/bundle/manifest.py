"""Reading a bundle: its manifest, its signature, and members checked against their hashes.

Standard library only: the bootstrap imports this from inside the bundle on a bare box.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vmgateway.bundle import signature

MANIFEST = "bundle/manifest.json"
SIGNATURE = "bundle/manifest.sig"
SIGNER = "bundle/signer.pem"
FORMAT = 1
UNSIGNED_MEMBERS = {MANIFEST, SIGNATURE, SIGNER}
"""The members the manifest cannot list: itself, and what proves it."""
PLATFORMS = {
    "x86_64": ["manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
               "linux_x86_64"],
    "aarch64": ["manylinux_2_36_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
                "manylinux2014_aarch64", "linux_aarch64"],
}
"""Wheel platform tags a Debian 12 box (glibc 2.36) can run, per machine."""


class BundleError(Exception):
    """The file is not a bundle this box may use; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    version: str
    platform: str
    """The machine it was built for, as platform.machine() says it: x86_64, aarch64."""
    python: str
    """major.minor of the Python its wheels are for."""
    files: dict[str, str]
    """Every member but the unsigned ones: name -> SHA-256 (hex)."""
    sizes: dict[str, int] | None = None
    """Every member's size, by name: no member is read past it (bundles built before had none)."""

    @property
    def wheels(self) -> list[str]:
        return sorted(name for name in self.files if name.startswith("wheels/") and name.endswith(".whl"))

    def size_of(self, name: str) -> int:
        """How many bytes member `name` may hold: its size, or MAX_MEMBER_BYTES without sizes."""
        return MAX_MEMBER_BYTES if self.sizes is None else self.sizes.get(name, -1)

    def release_wheel(self) -> str:
        (wheel,) = [name for name in self.wheels if name.startswith(f"wheels/vmgateway-{self.version}-")]
        return wheel

    def to_json(self) -> bytes:
        sizes = {} if self.sizes is None else {"sizes": self.sizes}
        return json.dumps({"format": FORMAT, "version": self.version, "platform": self.platform,
                           "python": self.python, "files": self.files} | sizes, indent=1, sort_keys=True).encode()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    signer: bytes | None
    """The public key whose valid signature the manifest carries; None for an unsigned bundle."""

    def check_fits_this_box(self) -> None:
        machine, python = platform.machine(), f"{sys.version_info.major}.{sys.version_info.minor}"
        if self.manifest.platform != machine:
            raise BundleError(f"{self.path.name} is built for {self.manifest.platform}, this box is {machine}:"
                              f" build it with --platform {machine}")
        if self.manifest.python != python:
            raise BundleError(f"{self.path.name} is built for Python {self.manifest.python}, this box has {python}")

    def check_signed_by(self, trusted: dict[str, bytes]) -> str:
        """The name of the trusted key (file name -> key) that signed the bundle; else BundleError."""
        if self.signer is None:
            raise BundleError(f"{self.path.name} is not signed (vmgateway bundle build --sign-key KEY.pem)")
        for name, key in trusted.items():
            if key == self.signer:
                return name
        raise BundleError(f"{self.path.name} is signed by {signature.fingerprint(self.signer)}, which is not a"
                          f" trusted key here (trusted: {', '.join(trusted) or 'none'})")

    def extract(self, members: list[str], into: Path) -> None:
        """Write `members` under `into`, each checked against its hash as it is read."""
        with _open_zip(self.path) as archive:
            for name in members:
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with target.open("wb") as sink:
                    for block in _blocks(archive, name, self.manifest.size_of(name)):
                        digest.update(block)
                        sink.write(block)
                if digest.hexdigest() != self.manifest.files[name]:
                    target.unlink()
                    raise BundleError(f"{self.path.name}: {name} does not match the manifest (altered)")


def read_bundle(path: Path) -> Bundle:
    """Open a bundle and check that it is whole: the manifest parses, its signature (if any) is
    valid for the key it names, every member is listed and matches its hash. Trust in the signer
    is a separate question (Bundle.check_signed_by)."""
    with _open_zip(path) as archive:
        _check_members(archive, path)
        names = set(archive.namelist())
        if MANIFEST not in names:
            raise BundleError(f"{path.name} is not a vmgateway bundle (no {MANIFEST})")
        raw = _read(archive, MANIFEST, _SMALL_MEMBER_BYTES)
        signer = None
        if SIGNATURE in names:
            if SIGNER not in names:
                raise BundleError(f"{path.name} has a signature but not the key that made it")
            try:
                signer = signature.public_key_from_pem(_read(archive, SIGNER, _SMALL_MEMBER_BYTES).decode())
            except (signature.NotAPublicKey, UnicodeDecodeError) as exc:
                raise BundleError(f"{path.name}: {SIGNER}: {exc}") from None
            if not signature.verify(signer, raw, _read(archive, SIGNATURE, _SMALL_MEMBER_BYTES)):
                raise BundleError(f"{path.name}: the manifest does not match its signature (altered)")
        manifest = _parse(raw, path)
        unlisted = sorted(names - UNSIGNED_MEMBERS - set(manifest.files) - {n for n in names if n.endswith("/")})
        if unlisted:
            raise BundleError(f"{path.name} holds files its manifest does not list (altered):"
                              f" {', '.join(unlisted[:5])}")
        missing = sorted(set(manifest.files) - names)
        if missing:
            raise BundleError(f"{path.name} lacks files its manifest lists: {', '.join(missing[:5])}")
        for name, expected in manifest.files.items():
            size = manifest.size_of(name)
            declared = archive.getinfo(name).file_size
            if declared > size or manifest.sizes is not None and declared != size:
                raise BundleError(f"{path.name}: {name} is not the size its manifest says (altered)")
            if _sha256(archive, name, size) != expected:
                raise BundleError(f"{path.name}: {name} does not match the manifest (altered)")
    return Bundle(path, manifest, signer)


def _parse(raw: bytes, path: Path) -> Manifest:
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise BundleError(f"{path.name} is a bundle of format {data.get('format')!r}; this program reads"
                              f" format {FORMAT}")
        sizes = data.get("sizes")
        manifest = Manifest(str(data["version"]), str(data["platform"]), str(data["python"]),
                            {str(k): str(v) for k, v in data["files"].items()},
                            None if sizes is None else {str(k): int(v) for k, v in sizes.items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path.name}: its manifest cannot be read ({exc})") from None
    wheels = [name for name in manifest.wheels if name.startswith(f"wheels/vmgateway-{manifest.version}-")]
    if len(wheels) != 1 or "requirements.txt" not in manifest.files:
        raise BundleError(f"{path.name} does not hold release {manifest.version}'s wheel and requirements")
    return manifest


_END_OF_ARCHIVE = b"PK\x05\x06"
"""The signature of a zip archive's last record: a bundle (written without an archive comment)
ends with it, 22 bytes before its end."""


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The bundle as an archive. zipfile looks for the archive's end in the last 64 KiB: a bundle
    cut just after one of its wheels (themselves archives) once opened as that wheel, and was
    refused as "not a vmgateway bundle" instead of as cut short."""
    try:
        with path.open("rb") as file:
            file.seek(-22, os.SEEK_END)
            ends_whole = file.read(4) == _END_OF_ARCHIVE
        if not ends_whole:
            raise zipfile.BadZipFile("it does not end where an archive ends")
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path.name} cannot be read as a bundle (truncated or not a bundle): {exc}") from None


_SMALL_MEMBER_BYTES = 1 << 20
"""The manifest, its signature and the signer's key are small."""
MAX_MEMBER_BYTES = 1 << 28
"""A member of a bundle whose manifest gives no sizes is read no further (the largest wheel is ~10 MB)."""
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
"""What `bundle build` writes; anything else is not one of ours."""


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse, with a sentence, what no bundle of ours holds: two members of one name (which one
    would be checked, which installed?), a directory entry with data, another compression method,
    an encrypted member."""
    seen: set[str] = set()
    for info in archive.infolist():
        if info.filename in seen:
            raise BundleError(f"{path.name} holds two members named {info.filename} (altered)")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise BundleError(f"{path.name}: {info.filename} is encrypted; a bundle holds no encrypted member")
        if info.compress_type not in _METHODS:
            raise BundleError(f"{path.name}: {info.filename} is compressed with method {info.compress_type}, which"
                              " no bundle uses (stored or deflated only)")
        if info.is_dir() and (info.file_size or info.compress_size):
            raise BundleError(f"{path.name}: the directory entry {info.filename} carries data (altered)")


def _blocks(archive: zipfile.ZipFile, name: str, limit: int) -> Iterator[bytes]:
    """A member's content in blocks, never more than `limit` bytes (a member that inflates past
    what it should is refused as it inflates, not after); a truncated or corrupt member is a
    BundleError."""
    read = 0
    try:
        with archive.open(name) as member:
            while block := member.read(min(1 << 20, limit + 1 - read)):
                read += len(block)
                if read > limit:
                    raise BundleError(f"{Path(str(archive.filename)).name}: {name} holds more than its manifest"
                                      " says (altered)")
                yield block
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"{Path(str(archive.filename)).name}: {name} cannot be read (truncated?): {exc}") from None


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    return b"".join(_blocks(archive, name, limit))


def _sha256(archive: zipfile.ZipFile, name: str, limit: int) -> str:
    digest = hashlib.sha256()
    for block in _blocks(archive, name, limit):
        digest.update(block)
    return digest.hexdigest()
