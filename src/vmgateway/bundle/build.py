"""`vmgateway bundle build`: the release and every dependency as wheels for the box, pinned
with hashes, in one signed zipapp.

The dependencies are pinned to what is installed where the bundle is built (the environment the
tests ran in), so 300 boxes upgraded from one bundle run the same code, and a box installs it
without reaching any registry.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from vmgateway.bundle.manifest import MANIFEST, PLATFORMS, SIGNATURE, SIGNER, Manifest

Say = Callable[[str], None]
BOX_PYTHON = "3.11"
"""Debian 12's python3."""
BOOTSTRAP = "from vmgateway.bootstrap import main\n\nraise SystemExit(main())\n"
PIP_TIMEOUT_S = 1800


class BuildError(Exception):
    """The bundle could not be built; nothing was written to --out."""


def checkout() -> Path | None:
    """The source tree this program runs from, when it is an (editable) checkout."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").exists() and (root / "src" / "vmgateway").is_dir() else None


def build(source: Path, out: Path, sign_key: Path | None, machine: str, say: Say) -> Path:
    """Write out/vmgateway-<version>.pyz; return its path."""
    private_key = _load_private_key(sign_key) if sign_key else None
    with tempfile.TemporaryDirectory(prefix="vmgateway-bundle-") as scratch:
        wheels = Path(scratch) / "wheels"
        say(f"building the release wheel from {source}")
        _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(source))
        (release,) = wheels.glob("vmgateway-*.whl")
        version = release.name.split("-")[1]
        constraints = Path(scratch) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={dist_version}\n" for name, dist_version in _installed().items()
                                       if name != "vmgateway"))
        say(f"downloading the dependencies' wheels for Python {BOX_PYTHON} on {machine}")
        platforms = [arg for tag in PLATFORMS[machine] for arg in ("--platform", tag)]
        _pip("download", "--only-binary=:all:", "--dest", str(wheels), "--constraint", str(constraints),
             "--python-version", BOX_PYTHON, "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
             "--abi", "none", *platforms, str(release))
        members = _members(wheels, release)
        manifest = Manifest(version, machine, BOX_PYTHON,
                            {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
                            {name: len(data) for name, data in members.items()})
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"vmgateway-{version}.pyz"
        partial = out / f".{target.name}.partial"
        with partial.open("wb") as handle:
            handle.write(b"#!/usr/bin/python3\n")
            with zipfile.ZipFile(handle, "w") as archive:
                for name, data in members.items():
                    compression = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
                    archive.writestr(name, data, compress_type=compression)
                raw = manifest.to_json()
                archive.writestr(MANIFEST, raw)
                if private_key is not None:
                    archive.writestr(SIGNATURE, private_key.sign(raw))
                    archive.writestr(SIGNER, _public_pem(private_key))
        partial.chmod(0o755)
        partial.replace(target)
    # For `sha256sum -c` where the bundle was copied: a file cut short is no zipapp, and python3
    # would only say SyntaxError.
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    say(f"{len(manifest.wheels)} wheels, {target.stat().st_size / 2**20:.1f} MB,"
        f" {'signed' if private_key else 'NOT signed (no --sign-key): no box will install it'}")
    return target


def _members(wheels: Path, release: Path) -> dict[str, bytes]:
    """Every file of the bundle but the manifest and its signature."""
    members: dict[str, bytes] = {"__main__.py": BOOTSTRAP.encode()}
    with zipfile.ZipFile(release) as wheel:  # the bootstrap's code is the release's own
        for name in wheel.namelist():
            if name.startswith("vmgateway/") and not name.endswith("/"):
                members[name] = wheel.read(name)
    requirements = []
    for path in sorted(wheels.glob("*.whl")):
        data = path.read_bytes()
        members[f"wheels/{path.name}"] = data
        name, version = path.name.split("-")[:2]
        requirements.append(f"{name}=={version} --hash=sha256:{hashlib.sha256(data).hexdigest()}\n")
    members["requirements.txt"] = "".join(requirements).encode()
    return members


def _installed() -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(): dist.version
            for dist in importlib.metadata.distributions() if dist.metadata["Name"]}


def _pip(*args: str) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                              capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"pip {args[0]}: {exc}") from None
    if done.returncode:
        raise BuildError(f"pip {args[0]} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BuildError(f"--sign-key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BuildError(f"--sign-key {path}: not an Ed25519 key (openssl genpkey -algorithm ed25519 -out KEY.pem)")
    return key


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
