"""`vmgateway upgrade` with locally built wheels: a good release (with a journal migration), one
that fails its health check (after migrating the journal further), one that does not start at
all, and an upgrade killed mid-install then retried. The gateway runs as a service would
(tests/support/service.py stands in for systemd) from <root>/current.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import doctor, vmgateway
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import dcmtk, free_ports, write_config
from tests.support.nut import UPS, NutServer
from tests.support.releases import BROKEN_HEALTH, CANNOT_START, REPO, Patch, add_migration, patched_tree
from vmgateway.dicom.echo import echo
from vmgateway.files import fsync_directory
from vmgateway.store.schema import SCHEMA_VERSION
from vmgateway.upgrade.install import InstallError, install_release, wheel_version
from vmgateway.upgrade.layout import Layout
from vmgateway.upgrade.state import UpgradeState

pytestmark = pytest.mark.long  # each upgrade installs a release with pip: about half a minute

OTHER_CHECKS = ("site", "listeners", "disk", "clock", "ups", "pacs", "upstream", "transfers", "certificates",
                "firewall")
"""Every doctor check but the release's."""
HL7_MESSAGE = (b"MSH|^~\\&|LAB|CLINIC|VM|VM|20261127120000||ORU^R01|UPG-1|P|2.5\r"
               b"PID|1||4711||Fido\rOBX|1|NM|GLU||5.5|mmol/L\r")
RELEASES: dict[str, list[Patch]] = {
    "1.0.0": [],
    "2.0.0": [add_migration("probe_2")],
    "3.0.0": [add_migration("probe_2"), add_migration("probe_3"), BROKEN_HEALTH],
    "4.0.0": [add_migration("probe_2"), CANNOT_START],
    "5.0.0": [add_migration("probe_2")],
}


def build_wheel(folder: Path, version: str, patches: list[Patch]) -> Path:
    """This source tree as release `version`, with `patches`, as a wheel."""
    # Without build isolation: the venv's own setuptools (a test dependency) builds it in 1 s, not 5.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--disable-pip-version-check", "-w", str(folder), str(patched_tree(folder, version, patches))],
                   check=True, capture_output=True, timeout=600)
    return folder / f"vmgateway-{version}-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wheels")
    return {version: build_wheel(folder, version, patches) for version, patches in RELEASES.items()}


@pytest.fixture(scope="module")
def wheelhouse(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dependency's wheel, fetched once for the module."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest",
                    str(folder), str(wheels["1.0.0"])], check=True, capture_output=True, timeout=600)
    return folder


@dataclass
class Box:
    root: Path
    config: Path
    data_dir: Path
    log: Path
    ports: list[int]
    sections: dict[str, dict[str, Any]]
    wheelhouse: Path

    def configure(self, **changes: dict[str, Any]) -> None:
        """The configuration with these sections changed (the service reads it at its next start)."""
        write_config(self.config, {name: self.sections.get(name, {}) | changes.get(name, {})
                                   for name in self.sections.keys() | changes.keys()})

    def upgrade_command(self, *args: str, unsigned: bool = True) -> list[str]:
        """`vmgateway upgrade` with the dependencies from the module's wheelhouse (no index: faster);
        the wheels these tests build carry no signature: `unsigned` allows them (--allow-unsigned)."""
        return [sys.executable, "-m", "vmgateway", "upgrade", "--config", str(self.config),
                *([] if "--recover" in args else ["--wheelhouse", str(self.wheelhouse)]),
                *(["--allow-unsigned"] if unsigned and "--recover" not in args else []), *args]

    def upgrade(self, *args: str, unsigned: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.upgrade_command(*args, unsigned=unsigned), capture_output=True, text=True,
                              timeout=600)

    def versions(self) -> dict[str, Any]:
        shown = vmgateway("version", "--config", str(self.config), "--json")
        assert shown.returncode == 0, shown.stderr
        result: dict[str, Any] = json.loads(shown.stdout)
        return result

    def answers_echo(self) -> bool:
        return echo("127.0.0.1", self.ports[0], "TEST", "VM_GATEWAY", 10).ok

    def wait_answering(self) -> None:
        deadline = time.monotonic() + 60
        while not self.answers_echo():  # another process starting: nothing to await but its answer
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.1)

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir / 'journal.sqlite'}?mode=ro", uri=True)

    def items(self) -> set[tuple[str, str]]:
        with self.journal() as conn:
            return {(kind, str(key)) for kind, key in conn.execute(
                "SELECT kind, coalesce(d.sop_instance_uid, h.control_id) FROM items i"
                " LEFT JOIN dicom_instances d ON d.item_id = i.id LEFT JOIN hl7_messages h ON h.item_id = i.id")}

    def schema(self) -> int:
        with self.journal() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])


SERVICE = [sys.executable, "-m", "tests.support.service"]


def _fresh_box(place: Path, wheelhouse: Path) -> Box:
    """An empty box at `place` (whatever ran there stopped and removed). Every box of the module
    lives at the same place, so that a release installed once can be copied into the next one
    (a venv does not move)."""
    subprocess.run([*SERVICE, "stop", str(place / "opt")], cwd=REPO, timeout=120)
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    root, data_dir, log = place / "opt", place / "var", place / "service.log"
    ports = free_ports(3)
    sections: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(data_dir), "min_free_mb": 1},
        "dicom": {"bind": "127.0.0.1", "port": ports[0]},
        "hl7": {"bind": "127.0.0.1", "port": ports[1]},
        "api": {"bind": "127.0.0.1", "port": ports[2]},
        "power": {"enabled": False},
        "upgrade": {"root": str(root), "service": "commands", "health_timeout_s": 10, "min_free_mb": 1,
                    "start_command": [*SERVICE, "start", str(root), str(place / "vmgateway.toml"), str(log)],
                    "stop_command": [*SERVICE, "stop", str(root)], "status_command": [*SERVICE, "status", str(root)],
                    "log_file": str(log)},
    }
    config = write_config(place / "vmgateway.toml", sections)
    return Box(root, config, data_dir, log, ports, sections, wheelhouse)


@pytest.fixture
def box(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Any:
    """A box with nothing installed."""
    fresh = _fresh_box(tmp_path_factory.getbasetemp() / "upgrade-box", wheelhouse)
    yield fresh
    subprocess.run([*SERVICE, "stop", str(fresh.root)], cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def first_install(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path], wheelhouse: Path) -> Path:
    """The first install of a release with `vmgateway upgrade` on an empty box, checked; what it
    left (releases, state, journal) is kept as a template for the tests that start from there."""
    place = tmp_path_factory.getbasetemp() / "upgrade-box"
    box = _fresh_box(place, wheelhouse)
    first = box.upgrade(str(wheels["1.0.0"]))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "release on trial: listening on loopback only" in box.log.read_text()
    assert box.versions() | {"installed": None} == {
        "this_program": "0.1.0", "running": "1.0.0", "committed": "1.0.0", "previous": None, "on_trial": None,
        "failed": [], "installed": None}
    assert box.answers_echo() and not (box.data_dir / "on-trial").exists()
    assert "carries no signature: installing it on the word of whoever ran this" in first.stdout
    with box.journal() as conn:  # the box runs code nobody signed: its audit trail says so
        audited = [row[0] for row in conn.execute("SELECT detail FROM events WHERE kind = 'audit'")]
    assert any(line.startswith("release 1.0.0 runs unsigned: installed unsigned with --allow-unsigned from")
               for line in audited), audited
    subprocess.run([*SERVICE, "stop", str(box.root)], cwd=REPO, check=True, timeout=120)
    template = tmp_path_factory.getbasetemp() / "upgrade-box-1.0.0"
    shutil.copytree(place, template, symlinks=True)
    return template


@pytest.fixture
def installed(first_install: Path, box: Box) -> Box:
    """A box running release 1.0.0 as the first install left it (copied: an install takes 15 s)."""
    for part in ("opt", "var"):
        shutil.copytree(first_install / part, box.root.parent / part, symlinks=True)
    subprocess.run(box.sections["upgrade"]["start_command"], cwd=REPO, check=True, timeout=60)
    box.wait_answering()
    return box


@pytest.mark.peer
def test_upgrades_commit_roll_back_and_never_lose_the_journal(installed: Box, wheels: dict[str, Path],
                                                              tmp_path: Path) -> None:
    box = installed  # release 1.0.0, first installed by `vmgateway upgrade` (fixture first_install)
    # What the clinic sent before the upgrades must survive all of them.
    files = copies_of_ct_small(tmp_path / "ct", 3)
    sent = dcmtk("storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(box.ports[0]), *map(str, files))
    assert sent.returncode == 0, sent.stdout
    hl7 = tmp_path / "result.hl7"
    hl7.write_bytes(HL7_MESSAGE)
    assert "AA" in vmgateway("send-hl7", "--port", str(box.ports[1]), str(hl7)).stdout
    kept = {item for item in box.items() if item[1] == "UPG-1" or item[0] == "dicom"}
    assert len(kept) == 4

    good = box.upgrade(str(wheels["2.0.0"]))  # migrates the journal forward
    assert good.returncode == 0, good.stdout + good.stderr
    assert (box.versions()["running"], box.versions()["previous"]) == ("2.0.0", "1.0.0")
    assert box.schema() == SCHEMA_VERSION + 1 and kept <= box.items()

    broken = box.upgrade(str(wheels["3.0.0"]))  # migrates further, then fails its health check
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "failed its health check" in broken.stderr and "broken on purpose" in broken.stderr
    assert "putting back the snapshot" in broken.stdout
    versions = box.versions()
    assert (versions["running"], versions["committed"], versions["failed"]) == ("2.0.0", "2.0.0", ["3.0.0"])
    assert box.schema() == SCHEMA_VERSION + 1 and kept <= box.items()  # the journal 2.0.0 can read, all of it
    (failed_log,) = (box.root / "logs").glob("3.0.0-*.log")
    assert "broken on purpose" in failed_log.read_text() and '"gateway running"' in failed_log.read_text()
    assert not (box.root / "releases" / "3.0.0").exists() and box.answers_echo()
    again = box.upgrade(str(wheels["3.0.0"]))
    assert again.returncode == 2 and "failed its trial before" in again.stderr
    status, findings = doctor(box.config, *OTHER_CHECKS)
    assert status == 1 and findings["release"]["summary"] == "2.0.0 committed, previous 1.0.0; failed: 3.0.0"

    dead = box.upgrade(str(wheels["4.0.0"]))  # does not start at all
    assert dead.returncode == 1 and "the service stopped running" in dead.stderr, dead.stdout + dead.stderr
    versions = box.versions()
    assert (versions["running"], versions["failed"]) == ("2.0.0", ["3.0.0", "4.0.0"])
    assert "this release cannot start" in next((box.root / "logs").glob("4.0.0-*.log")).read_text()
    assert box.answers_echo() and kept <= box.items()

    # Killed in the middle of installing 5.0.0: the running release is untouched; a retry cleans up.
    installing = box.root / "releases" / "5.0.0" / ".installing"
    cut = subprocess.Popen(box.upgrade_command(str(wheels["5.0.0"])), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (installing.exists() and any((installing.parent / "venv" / "bin").glob("pip*"))):
        assert time.monotonic() < deadline and cut.poll() is None, "the install did not get under way"
        time.sleep(0.02)  # another process's files: nothing to await
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait(30)
    assert installing.exists() and box.versions()["running"] == "2.0.0" and box.answers_echo()
    retried = box.upgrade(str(wheels["5.0.0"]))
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "removing the half-installed release 5.0.0" in retried.stdout
    versions = box.versions()
    assert (versions["running"], versions["previous"]) == ("5.0.0", "2.0.0")
    assert not installing.exists() and box.answers_echo() and kept <= box.items()
    state = UpgradeState.load(box.root / "state.json")
    assert state.trial is None and state.committed == "5.0.0"
    assert len(list((box.root / "snapshots").glob("journal-*.sqlite"))) == 1  # the newest only


@pytest.mark.peer
def test_a_trial_cut_off_by_a_reboot_is_rolled_back_at_boot(installed: Box, wheels: dict[str, Path]) -> None:
    box = installed
    marker = box.data_dir / "on-trial"
    cut = subprocess.Popen(box.upgrade_command(str(wheels["2.0.0"])), stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    assert cut.stdout is not None
    for line in cut.stdout:  # the upgrade says when it starts the trial
        if "on trial" in line:
            break
    os.killpg(cut.pid, signal.SIGKILL)  # the power goes: the upgrade dies, then the box
    cut.wait(30)
    subprocess.run(box.sections["upgrade"]["stop_command"], check=True, timeout=120)
    assert marker.exists() and box.versions()["on_trial"] == "2.0.0"
    status, findings = doctor(box.config, *OTHER_CHECKS)
    assert status == 2 and "upgrade --recover" in findings["release"]["advice"]

    recovered = box.upgrade("--recover", "--boot")  # the unit ordered before the gateway's
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    versions = box.versions()
    assert (versions["running"], versions["on_trial"], versions["failed"]) == ("1.0.0", None, ["2.0.0"])
    assert not marker.exists() and box.schema() == SCHEMA_VERSION  # 1.0.0's journal, whether 2.0.0 migrated or not
    subprocess.run(box.sections["upgrade"]["start_command"], check=True, timeout=60)  # systemd starts it next
    box.wait_answering()


@pytest.mark.peer
def test_an_upgrade_is_refused_on_battery_with_transfers_waiting_or_without_room(box: Box, wheels: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    nut = NutServer({"ups.status": "OB DISCHRG"}).start()
    try:
        box.configure(power={"enabled": True, "nut_port": nut.port, "ups": UPS})
        on_battery = box.upgrade(str(wheels["1.0.0"]))
        assert on_battery.returncode == 2 and "the UPS is not on mains: on_battery" in on_battery.stderr
        forced = box.upgrade("--force", str(wheels["1.0.0"]))
        assert forced.returncode == 2, "no --force makes an upgrade on battery"
    finally:
        nut.stop()
    box.configure(upgrade={"min_free_mb": 2**40})
    no_room = box.upgrade(str(wheels["1.0.0"]))
    assert no_room.returncode == 2 and "MB needed" in no_room.stderr
    box.configure()
    unsigned = box.upgrade(str(wheels["1.0.0"]), unsigned=False)  # a wheel is installed as root: only on one's word
    assert unsigned.returncode == 2 and "is no signed release bundle" in unsigned.stderr, unsigned.stderr
    not_a_wheel = tmp_path / "vmgateway-1.0.0-py3-none-any.whl"
    not_a_wheel.write_text("no zip")
    assert "cannot be read as a wheel" in box.upgrade(str(not_a_wheel)).stderr
    assert not box.root.joinpath("releases").exists() or not any(box.root.joinpath("releases").iterdir())
    assert box.versions()["running"] is None  # nothing changed


@pytest.mark.peer
def test_transfers_waiting_hold_an_upgrade_unless_forced(installed: Box, wheels: dict[str, Path]) -> None:
    box = installed
    hl7 = box.root / "m.hl7"
    hl7.write_bytes(HL7_MESSAGE)
    assert "AA" in vmgateway("send-hl7", "--port", str(box.ports[1]), str(hl7)).stdout
    # push mode towards an address where nothing listens: the message waits
    box.configure(transfers={"mode": "push", "hl7_url": "http://127.0.0.1:9/hl7", "allow_plain_http": True})
    held = box.upgrade(str(wheels["2.0.0"]))
    # the message, and the test message (processing ID T) of the first upgrade's health check
    assert held.returncode == 2 and "2 item(s) are waiting to be pushed" in held.stderr
    forced = box.upgrade("--force", str(wheels["2.0.0"]))
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert box.versions()["running"] == "2.0.0"
    # The running release again, forced: refused, and the release that runs stays whole.
    rerun = box.upgrade("--force", str(wheels["2.0.0"]))
    assert rerun.returncode == 2 and "release 2.0.0 is the one running now" in rerun.stderr, rerun.stderr
    assert (box.root / "releases" / "2.0.0" / "venv" / "bin" / "vmgateway").exists()
    assert box.versions()["running"] == "2.0.0" and box.answers_echo()


@pytest.mark.parametrize("name, reason", [
    ("vmgateway.whl", "is not a vmgateway wheel"),
    ("other-1.0-py3-none-any.whl", "is not a vmgateway wheel"),
    ("vmgateway-1.0;rm-py3-none-any.whl", "is not a vmgateway wheel"),
    ("vmgateway-1.0.0-py3-none-any.tar.gz", "is not a vmgateway wheel"),
])
def test_only_a_vmgateway_wheel_is_taken(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(InstallError, match=re.escape(reason)):
        wheel_version(tmp_path / name)


def test_a_restored_journal_is_the_snapshot_and_keeps_its_owner(tmp_path: Path) -> None:
    from vmgateway.store import snapshot
    from vmgateway.store.journal import connect

    journal = tmp_path / "journal.sqlite"
    conn = connect(journal)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("PRAGMA user_version = 4")
    snapshot.take(journal, tmp_path / "snapshots" / "before.sqlite")
    conn.execute("INSERT INTO t VALUES (2)")  # the trial's writes, some still in the WAL
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    os.chown(journal, 65534, 65534)  # the service's own user
    assert snapshot.version_of(journal) == 5
    snapshot.restore(tmp_path / "snapshots" / "before.sqlite", journal)
    assert snapshot.version_of(journal) == 4
    with sqlite3.connect(journal) as restored:
        assert restored.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert (journal.stat().st_uid, journal.stat().st_gid) == (65534, 65534)
    assert not journal.with_name("journal.sqlite-wal").exists() or journal.with_name(
        "journal.sqlite-wal").stat().st_size == 0


@pytest.mark.peer
def test_an_installed_release_is_whole_after_a_power_cut_right_after(crashfs: Any, wheels: dict[str, Path],
                                                                     wheelhouse: Path) -> None:
    """pip fsyncs nothing it writes: once install_release returns, the release must be durable."""
    layout = Layout(crashfs.mountpoint / "vmgateway")
    layout.root.mkdir()
    fsync_directory(crashfs.mountpoint)  # the box's installer made it long ago
    version = install_release(layout, wheels["1.0.0"], wheelhouse)

    def files() -> dict[str, int]:
        release = layout.release(version)
        return {str(p.relative_to(release)): p.lstat().st_size for p in release.rglob("*") if not p.is_dir()}

    installed = files()
    crashfs.cut()
    crashfs.mount()
    assert files() == installed
    assert layout.half_installed() == []
