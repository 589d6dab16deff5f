"""Release bundles without building one: the Ed25519 verifier against `cryptography`, and
bundles made by hand that are whole, cut short, altered, unsigned, padded or for another machine.
(Bundles built for real, installed and upgraded on a booted box: tests/test_box.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import re
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from vmgateway.bundle import manifest as manifest_module
from vmgateway.bundle import signature
from vmgateway.bundle.manifest import MANIFEST, SIGNATURE, SIGNER, BundleError, read_bundle
from vmgateway.bundle.trust import UntrustedKey, trust, trusted_keys

KEY = Ed25519PrivateKey.generate()


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@settings(max_examples=40, deadline=None)
@given(message=st.binary(max_size=2000), flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_the_verifier_agrees_with_cryptography(message: bytes, flip: int) -> None:
    key = signature.public_key_from_pem(public_pem(KEY))
    signed = KEY.sign(message)
    assert signature.verify(key, message, signed)
    altered = bytearray(signed)
    altered[flip // 8] ^= 1 << (flip % 8)
    assert not signature.verify(key, message, bytes(altered))
    assert not signature.verify(key, message + b"x", signed)
    other = signature.public_key_from_pem(public_pem(Ed25519PrivateKey.generate()))
    assert not signature.verify(other, message, signed)


def test_public_keys_are_read_as_openssl_writes_them_and_anything_else_is_named() -> None:
    key = signature.public_key_from_pem(public_pem(KEY))
    assert signature.public_key_to_pem(key) == public_pem(KEY)
    private = KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    with pytest.raises(signature.NotAPublicKey, match="this is a private key"):
        signature.public_key_from_pem(private)
    with pytest.raises(signature.NotAPublicKey, match="not a PEM public key"):
        signature.public_key_from_pem("hello")
    rsa_like = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK\n-----END PUBLIC KEY-----\n"
    with pytest.raises(signature.NotAPublicKey):
        signature.public_key_from_pem(rsa_like)


def make_bundle(path: Path, *, machine: str | None = None, sign: Ed25519PrivateKey | None = KEY,
                change: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
                sizes: dict[str, int] | None = None) -> Path:
    """A bundle of the real format around a stand-in wheel; `change` alters members after signing;
    `sizes` (given: the manifest lists every member's size, these overriding it) as `bundle build`
    writes them now (bundles built before listed none)."""
    members = {"__main__.py": b"print('bootstrap')\n", "wheels/vmgateway-1.2.3-py3-none-any.whl": b"wheel bytes",
               "wheels/other-1.0-py3-none-any.whl": b"dependency", "requirements.txt": b"vmgateway==1.2.3\n"}
    listed = {} if sizes is None else {"sizes": {name: len(data) for name, data in members.items()} | sizes}
    manifest = json.dumps({"format": 1, "version": "1.2.3", "platform": machine or platform.machine(),
                           "python": f"{sys.version_info.major}.{sys.version_info.minor}",
                           "files": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}}
                          | listed).encode()
    members[MANIFEST] = manifest
    if sign is not None:
        members[SIGNATURE] = sign.sign(manifest)
        members[SIGNER] = public_pem(sign).encode()
    members |= change or {}
    members |= extra or {}
    with path.open("wb") as handle:
        handle.write(b"#!/usr/bin/python3\n")
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return path


def test_a_whole_bundle_reads_and_its_signer_is_trusted_only_when_named(tmp_path: Path) -> None:
    bundle = read_bundle(make_bundle(tmp_path / "vmgateway-1.2.3.pyz"))
    bundle.check_fits_this_box()
    assert bundle.manifest.version == "1.2.3" and bundle.manifest.release_wheel().endswith("1.2.3-py3-none-any.whl")
    keys = tmp_path / "trusted-keys"
    with pytest.raises(BundleError, match="not a trusted key here \\(trusted: none\\)"):
        bundle.check_signed_by(trusted_keys(keys))
    saved = trust(keys, signature.public_key_from_pem(public_pem(KEY)))
    assert bundle.check_signed_by(trusted_keys(keys)) == saved.name
    (keys / "broken.pem").write_text("not a key")
    with pytest.raises(UntrustedKey, match="broken.pem"):
        trusted_keys(keys)
    bundle.extract(["requirements.txt"], tmp_path / "out")
    assert (tmp_path / "out" / "requirements.txt").read_bytes() == b"vmgateway==1.2.3\n"


@pytest.mark.parametrize("kind, reason", [
    ("cut short", "cannot be read as a bundle (truncated or not a bundle)"),
    ("cut after a wheel", "cannot be read as a bundle (truncated or not a bundle)"),
    ("altered wheel", "wheels/vmgateway-1.2.3-py3-none-any.whl does not match the manifest (altered)"),
    ("altered manifest", "the manifest does not match its signature (altered)"),
    ("unlisted file", "holds files its manifest does not list (altered): wheels/evil-1.0-py3-none-any.whl"),
    ("missing file", "lacks files its manifest lists: requirements.txt"),
    ("not a bundle", "is not a vmgateway bundle"),
])
def test_a_bundle_that_is_not_whole_is_refused_with_the_reason(tmp_path: Path, kind: str, reason: str) -> None:
    path = tmp_path / "vmgateway-1.2.3.pyz"
    if kind == "cut short":
        whole = make_bundle(tmp_path / "whole.pyz").read_bytes()
        path.write_bytes(whole[: len(whole) - 200])
    elif kind == "cut after a wheel":  # what is left ends as the wheel, itself an archive, ends
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as wheel:
            wheel.writestr("other/__init__.py", b"")
        whole = make_bundle(tmp_path / "whole.pyz", extra={"wheels/other-1.0-py3-none-any.whl": buffer.getvalue()}
                            ).read_bytes()
        end = whole.index(buffer.getvalue()) + len(buffer.getvalue())
        path.write_bytes(whole[:end + 100])
        assert zipfile.is_zipfile(path)  # zipfile alone would take it for the wheel
    elif kind == "altered wheel":
        make_bundle(path, change={"wheels/vmgateway-1.2.3-py3-none-any.whl": b"wheel bytez"})
    elif kind == "altered manifest":
        manifest = json.loads(zipfile.ZipFile(make_bundle(tmp_path / "whole.pyz")).read(MANIFEST))
        make_bundle(path, change={MANIFEST: json.dumps(manifest | {"version": "9.9.9"}).encode()})
    elif kind == "unlisted file":
        make_bundle(path, extra={"wheels/evil-1.0-py3-none-any.whl": b"evil"})
    elif kind == "missing file":
        source = zipfile.ZipFile(make_bundle(tmp_path / "whole.pyz"))
        with zipfile.ZipFile(path, "w") as archive:
            for name in source.namelist():
                if name != "requirements.txt":
                    archive.writestr(name, source.read(name))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("__main__.py", "print('hello')")
    with pytest.raises(BundleError, match=reason.replace("(", "\\(").replace(")", "\\)")):
        read_bundle(path)


def test_an_unsigned_bundle_or_one_for_another_machine_is_refused(tmp_path: Path) -> None:
    unsigned = read_bundle(make_bundle(tmp_path / "unsigned.pyz", sign=None))
    with pytest.raises(BundleError, match="is not signed"):
        unsigned.check_signed_by({"any": b"k" * 32})
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    foreign = read_bundle(make_bundle(tmp_path / "foreign.pyz", machine=other))
    with pytest.raises(BundleError, match=f"is built for {other}, this box is {platform.machine()}"):
        foreign.check_fits_this_box()


def test_verify_exits_0_only_for_a_bundle_a_trusted_key_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`verify` once exited 0 for an unsigned bundle; what it proves is only what a trusted key proves."""
    from vmgateway import bootstrap

    monkeypatch.setattr(bootstrap, "TRUSTED_KEYS", tmp_path / "no-keys-here")
    ours, theirs = tmp_path / "ours.pem", tmp_path / "theirs.pem"
    ours.write_text(public_pem(KEY))
    theirs.write_text(public_pem(Ed25519PrivateKey.generate()))

    def verify(bundle: Path, *flags: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", [str(bundle)])
        status = bootstrap.main(["verify", *flags])
        said = capsys.readouterr()
        return status, said.out + said.err

    signed, unsigned = make_bundle(tmp_path / "signed.pyz"), make_bundle(tmp_path / "unsigned.pyz", sign=None)
    status, said = verify(signed, "--trust", str(ours))
    assert status == 0 and "trusted   ours.pem" in said
    status, said = verify(signed)  # a box with no trusted key, and none given: nothing is proven
    assert status == 2 and "no key to check the signer against" in said
    status, said = verify(signed, "--trust", str(theirs))
    assert status == 2 and "not verified" in said and "not a trusted key here" in said
    status, said = verify(unsigned, "--trust", str(ours))
    assert status == 2 and "is not signed" in said


def _appended(path: Path, info: zipfile.ZipInfo | str, data: bytes) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize("member, data, reason", [
    ("requirements.txt", b"evil==1.0\n", "holds two members named requirements.txt"),
    ("wheels/", b"data", "the directory entry wheels/ carries data"),
])
def test_what_no_bundle_holds_is_refused_with_a_sentence(tmp_path: Path, member: zipfile.ZipInfo | str, data: bytes,
                                                         reason: str) -> None:
    bundle = _appended(make_bundle(tmp_path / "vmgateway-1.2.3.pyz"), member, data)
    with pytest.raises(BundleError, match=re.escape(reason)):
        read_bundle(bundle)


def test_an_encrypted_member_is_refused(tmp_path: Path) -> None:
    bundle = _appended(make_bundle(tmp_path / "vmgateway-1.2.3.pyz"), "notes.txt", b"x")
    data = bytearray(bundle.read_bytes())
    entry = data.rindex(b"notes.txt") - 46  # its central directory record (zipfile never writes the flag)
    assert data[entry:entry + 4] == b"PK\x01\x02"
    data[entry + 8] |= 0x1  # general purpose flag, bit 0: encrypted
    bundle.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="notes.txt is encrypted; a bundle holds no encrypted member"):
        read_bundle(bundle)


def test_another_compression_method_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "vmgateway-1.2.3.pyz")
    with zipfile.ZipFile(bundle, "a", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("notes.txt", b"x" * 100)
    with pytest.raises(BundleError, match="compressed with method 12, which no bundle uses"):
        read_bundle(bundle)


def test_a_member_is_read_no_further_than_its_manifest_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few KB that inflate to GBs took 15-19 s to be refused: now its size is known first, and
    no member is inflated past it."""
    blown = make_bundle(tmp_path / "blown.pyz", change={"wheels/other-1.0-py3-none-any.whl": bytes(8 << 20)})
    monkeypatch.setattr(manifest_module, "MAX_MEMBER_BYTES", 1 << 20)  # a manifest without sizes: the cap
    with pytest.raises(BundleError, match="wheels/other-1.0-py3-none-any.whl is not the size its manifest says"):
        read_bundle(blown)
    sized = make_bundle(tmp_path / "sized.pyz", sizes={"wheels/vmgateway-1.2.3-py3-none-any.whl": 3})
    with pytest.raises(BundleError, match="wheels/vmgateway-1.2.3-py3-none-any.whl is not the size its manifest says"):
        read_bundle(sized)
    assert read_bundle(make_bundle(tmp_path / "whole.pyz", sizes={})).manifest.sizes is not None
