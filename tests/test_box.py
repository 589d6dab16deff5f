"""The box as a whole, under a real systemd (PID 1 in a container, tests/support/box.py): the first
install from a signed bundle with no network, commissioning with no --config anywhere, the unit
(notify, watchdog, restart, bounded stop), upgrades through the systemd service class (commit,
rollback, a reboot in the middle of a trial, refused bundles), the UPS and a serial instrument.

One box is booted for the module and the scenarios run in order on it, as a box lives: each
test leaves it as the next one expects (the suite must stay under 20 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.support.box import Box
from tests.support.dicomdata import copies_of_ct_small
from tests.support.releases import BROKEN_HEALTH, Patch, patched_tree
from tests.support.sites import FORMS
from vmgateway.bundle.manifest import MANIFEST, SIGNATURE, SIGNER

pytestmark = [pytest.mark.box, pytest.mark.long,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-nspawn"),
                                 reason="needs root and systemd-nspawn (sh scripts/setup.sh test installs it)")]

KEPT: dict[str, str] = {}
"""What one scenario leaves for the next (they run in order on one box)."""
IN = "/srv/in"
"""Where the box sees what the tests hand it (read-only)."""
HL7_MESSAGE = (b"MSH|^~\\&|LAB|CLINIC|VM|VM|20261203120000||ORU^R01|BOX-1|P|2.5\r"
               b"PID|1||4711||Fido\rOBX|1|NM|GLU||5.5|mmol/L\r")
STORE = """
import sys
from pydicom import dcmread
from pynetdicom import AE
ae = AE("MODALITY")
files = [dcmread(name) for name in sys.argv[1:]]
for ds in files:
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
assoc = ae.associate("127.0.0.1", 4006, ae_title="VM_GATEWAY")
assert assoc.is_established, "association refused"
print(" ".join(hex(assoc.send_c_store(ds).Status) for ds in files))
assoc.release()
"""
API = """
import json, ssl, sys, urllib.request
request = urllib.request.Request("https://127.0.0.1:3000" + sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10) as answer:
    print(answer.status, answer.read().decode())
"""
IDLE_KEEP_ALIVE = """
import socket, ssl, sys, time
raw = socket.create_connection(("127.0.0.1", 3000))
tls = ssl._create_unverified_context().wrap_socket(raw)
tls.sendall(b"GET /api/v1/health HTTP/1.1\\r\\nHost: box\\r\\nConnection: keep-alive\\r\\n\\r\\n")
print(tls.recv(65536).split(b"\\r\\n")[0].decode(), flush=True)
time.sleep(600)  # holds the connection open and idle, reading nothing
"""
SERIAL_INSTRUMENT = """
import grp, os, sys
sys.path.insert(0, "/srv/in")
from astm_instrument import Instrument, PtyMaster, result_message
pty = PtyMaster(timeout=30)  # the instrument's end; the gateway opens the other as its serial port
os.chown(pty.device, 0, grp.getgrnam("dialout").gr_gid)
os.chmod(pty.device, 0o660)  # as udev makes a USB-serial adapter's node
os.symlink(pty.device, sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
print("sent" if Instrument("", 0, sock=pty).send_message(result_message(sys.argv[2], "VM-10")) else "refused", flush=True)
"""
DUMMY_UPS = "[ups]\n  driver = dummy-ups\n  port = ups.dev\n  mode = dummy-once\n"
"""dummy-ups stands in for usbhid-ups (no UPS on USB here); everything else is as host render wrote it."""
UNIT_OF_2: Patch = ("vmgateway/host/systemd.py", "Documentation=https://vetmanager.se\n",
                    "Documentation=https://vetmanager.se\n# the unit of release 2.0.0\n")
"""Release 2.0.0 changes the unit: its upgrade must leave the box running that unit."""
UPS_ADMIN = "[admin]\n  password = test-only\n  actions = SET FSD\n"


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def build_bundle(folder: Path, version: str, patches: list[Patch], key: Path | None) -> Path:
    tree = patched_tree(folder / "trees", version, patches)
    built = subprocess.run([sys.executable, "-m", "vmgateway", "bundle", "build", "--source", str(tree), "--out",
                            str(folder), *(["--sign-key", str(key)] if key else [])],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


def rewritten(bundle: Path, out: Path, change: dict[str, bytes | None], key: Path | None = None) -> Path:
    """A copy of `bundle` with members replaced (None: removed), re-signed with `key` if given."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(out, "w") as target:
        members = {name: source.read(name) for name in source.namelist()}
        for name, data in change.items():
            if data is None:
                members.pop(name, None)
            else:
                members[name] = data
        if key is not None:
            signer = load_pem_private_key(key.read_bytes(), None)
            assert isinstance(signer, Ed25519PrivateKey)
            members[SIGNATURE] = signer.sign(members[MANIFEST])
            members[SIGNER] = signer.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        for name, data in members.items():
            target.writestr(name, data)
    return out


@pytest.fixture(scope="module")
def given(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the box is handed: bundles good and bad, the public key, DICOM files, an HL7 message."""
    folder = tmp_path_factory.mktemp("in")
    os.chmod(folder, 0o755)
    key, public = _keys(folder, "release-key")
    other_key, _ = _keys(folder, "other-key")
    releases: dict[str, list[Patch]] = {"1.0.0": [], "2.0.0": [UNIT_OF_2], "3.0.0": [BROKEN_HEALTH], "4.0.0": []}
    with ThreadPoolExecutor() as builders:  # pip runs in processes of its own
        built = list(builders.map(lambda version, patches: build_bundle(folder, version, patches, key),
                                  releases, releases.values()))
    first = built[0]
    bad = folder / "bad"
    bad.mkdir()
    (bad / "vmgateway-1.0.0.pyz").write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    manifest = json.loads(zipfile.ZipFile(first).read(MANIFEST))
    rewritten(first, bad / "aarch64" / first.name,
              {MANIFEST: json.dumps(manifest | {"platform": "aarch64"}).encode()}, key)
    rewritten(first, bad / "unsigned" / first.name, {SIGNATURE: None, SIGNER: None})
    rewritten(first, bad / "other-signer" / first.name, {}, other_key)
    release_wheel = next(name for name in manifest["files"] if name.startswith("wheels/vmgateway-"))
    wheel = zipfile.ZipFile(first).read(release_wheel)
    rewritten(first, bad / "altered" / first.name, {release_wheel: wheel[:-100] + b"\0" * 100})
    copies_of_ct_small(folder / "ct", 3)
    shutil.copy(Path(__file__).parent / "support" / "astm_instrument.py", folder / "astm_instrument.py")
    (folder / "serial_instrument.py").write_text(SERIAL_INSTRUMENT)
    (folder / "result.hl7").write_bytes(HL7_MESSAGE)
    public.chmod(0o644)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="module")
def box(given: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    booted = Box(tmp_path_factory.mktemp("box") / "upper", {given: IN})
    try:
        yield booted.boot()
    finally:
        booted.shutdown()


def versions(box: Box) -> dict[str, object]:
    shown = box.run("vmgateway", "version", "--json", check=True)
    result: dict[str, object] = json.loads(shown.stdout)
    return result


def store_ct(box: Box, given: Path) -> str:
    """C-STORE the CT files with pynetdicom from the release's venv (the box has no dcmtk)."""
    files = [f"{IN}/ct/{path.name}" for path in sorted((given / "ct").iterdir())]
    return box.run("/opt/vmgateway/current/venv/bin/python", "-c", STORE, *files, check=True).stdout.strip()


def api(box: Box, path: str, token: str) -> tuple[int, dict[str, Any]]:
    answer = box.run("python3", "-c", API, path, token, check=True).stdout
    status, body = answer.split(" ", 1)
    return int(status), json.loads(body)


def main_pid(box: Box) -> int:
    return int(box.show("vmgateway", "MainPID")["MainPID"])


def active(box: Box) -> bool:
    return box.run("systemctl", "is-active", "--quiet", "vmgateway").returncode == 0


def test_bad_bundles_and_a_box_without_venv_are_refused_and_nothing_changes(box: Box) -> None:
    # Cut short, the file is no whole zip archive: python3 runs it as a script (a SyntaxError) or,
    # when the cut falls just after a wheel, takes that wheel for the archive and finds no
    # __main__; either way it fails before any of our code (vmgateway upgrade and bundle verify
    # say "truncated").
    cut_short = box.run("python3", f"{IN}/bad/vmgateway-1.0.0.pyz", "install")
    assert cut_short.returncode == 1, cut_short.stderr
    assert "SyntaxError" in cut_short.stderr or "can't find '__main__' module" in cut_short.stderr, cut_short.stderr
    refusals = {
        "bad/aarch64/vmgateway-1.0.0.pyz": "built for aarch64, this box is x86_64",
        "bad/unsigned/vmgateway-1.0.0.pyz": "is not signed",
        "bad/altered/vmgateway-1.0.0.pyz": "does not match the manifest (altered)",
    }
    for bundle, reason in refusals.items():
        done = box.run("python3", f"{IN}/{bundle}", "install")
        assert done.returncode == 2 and reason in done.stderr and "nothing changed" in done.stderr, (bundle, done)
    other = box.run("python3", f"{IN}/bad/other-signer/vmgateway-1.0.0.pyz", "install", "--trust",
                    f"{IN}/release-key.pub.pem")
    assert other.returncode == 2 and "which is not a trusted key here" in other.stderr, other.stderr
    # Debian's python3 without python3-venv: hide its ensurepip for one command.
    no_venv = box.run("sh", "-c", f"mount --bind /var/empty /usr/lib/python3.11/ensurepip 2>/dev/null"
                      f" || {{ mkdir -p /tmp/empty && mount --bind /tmp/empty /usr/lib/python3.11/ensurepip; }};"
                      f" python3 {IN}/vmgateway-1.0.0.pyz install --trust {IN}/release-key.pub.pem;"
                      " status=$?; umount /usr/lib/python3.11/ensurepip; exit $status")
    assert no_venv.returncode == 2 and "apt-get install python3-venv" in no_venv.stderr, no_venv.stderr
    # A disk too full for the release: a small file system on /opt for one command.
    full = box.run("sh", "-c", "mount -t tmpfs -o size=8m tmpfs /opt && python3"
                   f" {IN}/vmgateway-1.0.0.pyz install --trust {IN}/release-key.pub.pem; status=$?; umount /opt;"
                   " exit $status")
    assert full.returncode == 2 and "MB free under /opt/vmgateway" in full.stderr, full.stderr
    checked = box.run("sh", "-c", f"cd {IN} && sha256sum -c vmgateway-1.0.0.pyz.sha256")
    assert checked.returncode == 0 and "OK" in checked.stdout
    untouched = box.run("sh", "-c", "ls -d /opt/vmgateway /etc/vmgateway /var/lib/vmgateway; getent passwd vmgateway")
    assert untouched.stdout == "", untouched.stdout


def test_a_blank_box_installs_offline_and_is_commissioned_without_config_flags(box: Box, given: Path) -> None:
    installed = box.run("python3", f"{IN}/vmgateway-1.0.0.pyz", "install", "--trust", f"{IN}/release-key.pub.pem",
                        timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "started vmgateway" in installed.stdout and "made the system user vmgateway" in installed.stdout
    assert active(box) and box.show("vmgateway", "StatusText")["StatusText"] == "receiving"  # READY=1 was sent
    again = box.run("python3", f"{IN}/vmgateway-1.0.0.pyz", "install", timeout=600)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
    layout = box.run("stat", "-c", "%n %a %U:%G", "/etc/vmgateway", "/var/lib/vmgateway", check=True).stdout
    assert layout.splitlines() == ["/etc/vmgateway 750 root:vmgateway", "/var/lib/vmgateway 750 vmgateway:vmgateway"]
    assert versions(box)["running"] == "1.0.0" and versions(box)["committed"] == "1.0.0"

    form = box.run("vmgateway", "site", "init", "--no-ask", *FORMS[1], check=True)
    assert "/etc/vmgateway/vmgateway.toml" in form.stdout and "systemctl restart vmgateway" in form.stdout
    box.run("systemctl", "restart", "vmgateway", check=True)
    token = box.run("vmgateway", "token", "create", "vetmanager-server", check=True)
    assert "configuration /etc/vmgateway/vmgateway.toml; data /var/lib/vmgateway" in token.stderr
    secret = token.stdout.strip()
    owners = box.run("sh", "-c", "stat -c %U /var/lib/vmgateway/journal.sqlite* | sort -u", check=True).stdout
    assert owners.split() == ["vmgateway"]  # root's command made nothing the service cannot write

    assert "succeeded" in box.run("vmgateway", "echo", "127.0.0.1", "4006", "--called-aet", "VM_GATEWAY",
                                  check=True).stdout
    assert store_ct(box, given) == "0x0 0x0 0x0"
    assert ": AA" in box.run("vmgateway", "send-hl7", f"{IN}/result.hl7", check=True).stdout
    status, body = api(box, "/api/v1/status", secret)
    assert status == 200 and {kind: n["items"] for kind, n in body["received"].items()} == {"dicom": 3, "hl7": 1}
    KEPT["token"] = secret


def test_a_stop_ends_within_the_drain_while_an_api_client_holds_an_idle_connection(box: Box) -> None:
    holder = box.popen("python3", "-c", IDLE_KEEP_ALIVE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith("HTTP/1.1 200")
        started = time.monotonic()
        box.run("systemctl", "stop", "vmgateway", check=True)
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(30)
    shown = box.show("vmgateway", "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, shown
    assert took < 30 + 5, f"the stop took {took:.1f} s; the longest drain is dicom's 30 s"  # defaults
    log = box.run("journalctl", "-u", "vmgateway", "-o", "cat", "--no-pager", check=True).stdout
    assert '"msg": "gateway stopped"' in log.splitlines()[-1] or "gateway stopped" in log, log[-2000:]
    box.run("systemctl", "start", "vmgateway", check=True)


def test_kill_9_and_a_hung_gateway_are_restarted_by_systemd_and_nothing_is_lost(box: Box, given: Path) -> None:
    before = main_pid(box)
    box.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "vmgateway", check=True)
    box.wait_until("systemd restarts the gateway after kill -9", lambda: active(box) and main_pid(box) not in (0, before))
    assert store_ct(box, given) == "0x0 0x0 0x0"  # the same instances again: answered, kept once
    status, body = api(box, "/api/v1/status", KEPT["token"])
    assert {kind: n["items"] for kind, n in body["received"].items()} == {"dicom": 3, "hl7": 1}

    # The unit's WatchdogSec=30, shortened by a drop-in for the test (the mechanism is the same).
    box.run("sh", "-c", "mkdir -p /run/systemd/system/vmgateway.service.d && printf '[Service]\\nWatchdogSec=5\\n'"
            " > /run/systemd/system/vmgateway.service.d/test.conf && systemctl daemon-reload"
            " && systemctl restart vmgateway", check=True)
    hung = main_pid(box)
    box.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "vmgateway", check=True)  # alive, but its loop no longer pings the watchdog
    box.wait_until("the watchdog restarts a hung gateway", lambda: active(box) and main_pid(box) not in (0, hung))
    box.run("sh", "-c", "rm -r /run/systemd/system/vmgateway.service.d && systemctl daemon-reload", check=True)
    log = box.run("journalctl", "-u", "vmgateway", "--no-pager", check=True).stdout
    assert "Watchdog timeout" in log, log[-3000:]
    assert "succeeded" in box.run("vmgateway", "echo", "127.0.0.1", "4006", "--called-aet", "VM_GATEWAY").stdout

    # Each line carries its priority to journald: `journalctl -p warning` lists the warnings only.
    box.run("vmgateway", "echo", "127.0.0.1", "4006", "--called-aet", "NOT_THE_GATEWAY")  # rejected: a warning

    def warnings() -> str:
        return box.run("journalctl", "-u", "vmgateway", "-p", "warning", "-o", "cat", "--no-pager", check=True).stdout

    box.wait_until("the rejection is in the journal", lambda: "association rejected" in warnings())
    listed = warnings()
    rejected = [line for line in listed.splitlines() if "association rejected" in line]
    assert rejected[-1].startswith('{"ts"'), listed[-2000:]  # the <4> prefix taken off by journald
    assert '"gateway running"' not in listed  # info


def test_the_ups_as_host_render_configures_it_is_read_by_the_gateway(box: Box) -> None:
    box.run("vmgateway", "host", "render", "--out", "/root/rendered", check=True)
    box.run("sh", "-c", "cp -a /root/rendered/etc/nut/. /etc/nut/"
            f" && printf '{DUMMY_UPS}' > /etc/nut/ups.conf && printf '{UPS_ADMIN}' >> /etc/nut/upsd.users"
            " && printf 'ups.status: OL\\nbattery.charge: 100\\nbattery.runtime: 1800\\n' > /etc/nut/ups.dev"
            " && systemctl restart nut-driver-enumerator.service && systemctl restart nut-server nut-monitor",
            check=True)
    box.wait_until("the gateway reads the UPS on mains", lambda: '"state": "online"' in json.dumps(
        api(box, "/api/v1/status", KEPT["token"])[1]["components"].get("power", {})))
    doctor = box.run("vmgateway", "doctor", "--json", "--skip", "firewall", "--skip", "upstream")
    found = {finding["check"]: finding["level"] for finding in json.loads(doctor.stdout)}
    assert (found.get("ups"), found.get("release")) == ("OK", "OK"), found


def test_upgrades_through_systemd_commit_roll_back_and_refuse_bundles_that_are_not_trusted(box: Box) -> None:
    # A failed health check is known after health_timeout_s (120 s by default): shorter here.
    box.run("sh", "-c", "printf '\\n[upgrade]\\nhealth_timeout_s = 15\\n' >> /etc/vmgateway/vmgateway.toml", check=True)
    good = box.run("vmgateway", "upgrade", f"{IN}/vmgateway-2.0.0.pyz", timeout=900)
    assert good.returncode == 0, good.stdout + good.stderr
    assert (versions(box)["running"], versions(box)["previous"]) == ("2.0.0", "1.0.0")
    assert "restarted vmgateway (its unit changed)" in good.stdout and active(box)
    assert "# the unit of release 2.0.0" in box.run("systemctl", "cat", "vmgateway", check=True).stdout
    assert box.run("readlink", "/usr/local/bin/vmgateway").stdout.strip() == "/opt/vmgateway/current/venv/bin/vmgateway"
    assert box.run("vmgateway", "--version").stdout.strip() == "vmgateway 2.0.0"

    broken = box.run("vmgateway", "upgrade", f"{IN}/vmgateway-3.0.0.pyz", timeout=900)
    assert broken.returncode == 1 and "broken on purpose" in broken.stderr, broken.stdout + broken.stderr
    shown = versions(box)
    assert (shown["running"], shown["failed"]) == ("2.0.0", ["3.0.0"]) and active(box)

    installed = box.run("ls", "/opt/vmgateway/releases", check=True).stdout
    for bundle, reason in {"bad/vmgateway-1.0.0.pyz": "truncated",
                           "bad/unsigned/vmgateway-1.0.0.pyz": "is not signed",
                           "bad/altered/vmgateway-1.0.0.pyz": "does not match the manifest (altered)",
                           "bad/other-signer/vmgateway-1.0.0.pyz": "not a trusted key here",
                           "bad/aarch64/vmgateway-1.0.0.pyz": "built for aarch64"}.items():
        refused = box.run("vmgateway", "upgrade", "--force", f"{IN}/{bundle}")
        assert refused.returncode == 2 and reason in refused.stderr, (bundle, refused.stderr)
    assert box.run("ls", "/opt/vmgateway/releases", check=True).stdout == installed
    assert versions(box)["running"] == "2.0.0" and active(box)
    again = box.run("vmgateway", "upgrade", "--force", f"{IN}/vmgateway-2.0.0.pyz")
    assert again.returncode == 2 and "is the one running now" in again.stderr, again.stderr
    assert active(box) and box.run("vmgateway", "--version").stdout.strip() == "vmgateway 2.0.0"


def test_a_reboot_during_a_trial_comes_back_on_the_committed_release(box: Box) -> None:
    # Run as a unit of the box (as from an SSH session), so that the reboot stops it as it would there.
    box.run("systemd-run", "--unit=upgrade-by-hand", "vmgateway", "upgrade", f"{IN}/vmgateway-4.0.0.pyz", check=True)
    box.wait_until("the upgrade starts its trial", lambda: "on trial" in box.run(
        "journalctl", "-u", "upgrade-by-hand", "-o", "cat", "--no-pager").stdout)
    box.run("systemctl", "reboot", "--no-block")
    assert box.ended(120) == 133  # nspawn's exit status for a reboot
    box.boot()
    box.wait_until("the gateway is back", lambda: active(box))
    shown = versions(box)
    assert (shown["running"], shown["on_trial"], shown["failed"]) == ("2.0.0", None, ["3.0.0", "4.0.0"]), shown
    log = box.run("journalctl", "-b", "-u", "vmgateway-upgrade-recover", "--no-pager", check=True).stdout
    assert "rolling back release 4.0.0" in log, log
    assert "succeeded" in box.run("vmgateway", "echo", "127.0.0.1", "4006", "--called-aet", "VM_GATEWAY").stdout


def security_exposure(box: Box) -> tuple[float, set[str]]:
    """systemd-analyze's overall exposure of the unit, and the settings it marks as exposed."""
    shown = box.run("systemd-analyze", "security", "vmgateway", "--no-pager", check=True).stdout
    exposed = {line.split()[1] for line in shown.splitlines() if line.startswith("✗")}
    return float(shown.split("Overall exposure level for vmgateway.service:")[1].split()[0]), exposed


def test_a_serial_instrument_reaches_the_gateway_under_the_hardened_unit(box: Box) -> None:
    score, exposed = security_exposure(box)
    instrument = box.popen("python3", f"{IN}/serial_instrument.py", "/dev/ttyVM0", "SER-1", stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE)
    try:
        assert instrument.stdout is not None and instrument.stdin is not None
        assert instrument.stdout.readline().strip() == "ready"
        box.run("sh", "-c", "printf '\\n[[astm.serial]]\\nname = \"vetscan\"\\ndevice = \"/dev/ttyVM0\"\\n'"
                " >> /etc/vmgateway/vmgateway.toml", check=True)
        updated = box.run("vmgateway", "host", "install", check=True).stdout
        assert "added vmgateway to dialout" in updated and "restarted vmgateway (its unit changed)" in updated
        unit = box.run("cat", "/etc/systemd/system/vmgateway.service", check=True).stdout
        assert {"PrivateDevices=yes", "SupplementaryGroups=dialout", "BindPaths=-/dev/ttyVM0",
                "DeviceAllow=/dev/ttyVM0 rw"} <= set(unit.splitlines())
        instrument.stdin.write("go\n")
        instrument.stdin.flush()
        assert instrument.stdout.readline().strip() == "sent"
    finally:
        instrument.kill()
        instrument.wait(30)
    log = box.run("journalctl", "-u", "vmgateway", "-o", "cat", "--no-pager", check=True).stdout
    assert '"msg": "astm message kept", "listener": "vetscan"' in log and '"samples": "SER-1"' in log
    serial_score, serial_exposed = security_exposure(box)
    # What a serial port needs and nothing else: the device and its group.
    assert serial_exposed - exposed <= {"SupplementaryGroups=", "DeviceAllow="}, serial_exposed - exposed
    assert serial_score <= score + 0.2, (score, serial_score)


def test_on_battery_and_low_the_gateway_drains_nut_powers_the_box_off_and_the_next_boot_is_clean(box: Box) -> None:
    box.run("upsrw", "-s", "ups.status=OB LB", "-u", "admin", "-p", "test-only", "-w", "ups@127.0.0.1", check=True)
    assert box.ended(120) == 0  # upsmon's shutdown: the container powered off
    box.boot()
    box.wait_until("the gateway is back", lambda: active(box))
    status, body = api(box, "/api/v1/events?limit=500", KEPT["token"])
    events = [(event["kind"], event["detail"]) for event in reversed(body["events"])]
    # On OB LB upsmon raises FSD at once: the gateway drains for whichever it reads first.
    drained = next(n for n, (kind, _) in enumerate(events) if kind == "power_drain")
    reason = events[drained][1]
    assert reason in ("the UPS is on battery and the battery is low", "the UPS announced a forced shutdown (FSD)")
    assert events[drained + 1][0] == "stop" and events[drained + 1][1].startswith(f"clean ({reason})")
    assert not any(kind == "recovery" for kind, _ in events[drained:]), events[drained:]
