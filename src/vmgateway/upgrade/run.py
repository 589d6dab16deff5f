"""`vmgateway upgrade`: install beside, drain, snapshot, switch, trial, then commit or roll back.

Every step that changes something is recorded in the state file before or right after it, so
that a cut-off run (kill -9, power cut, reboot) is finished or undone by the next run, or by
`vmgateway upgrade --recover` at boot.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vmgateway.bundle.manifest import Bundle, BundleError, read_bundle
from vmgateway.bundle.trust import UntrustedKey, trusted_keys
from vmgateway.config import Settings
from vmgateway.files import fsync_directory, write_atomically
from vmgateway.store import snapshot
from vmgateway.upgrade import trial
from vmgateway.upgrade.health import listening_problems, wait_healthy
from vmgateway.upgrade.install import InstallError, install_bundle, install_release, wheel_version
from vmgateway.upgrade.layout import UNSIGNED, Layout
from vmgateway.upgrade.preflight import refusals
from vmgateway.upgrade.service import Service, ServiceError, service_for
from vmgateway.upgrade.state import UpgradeState

Say = Callable[[str], None]


class UpgradeRefused(Exception):
    """Nothing was changed; the message says why."""


class UpgradeFailed(Exception):
    """The release did not pass its trial and was rolled back; the message says why."""


@contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeRefused("another upgrade is running") from None
        yield


def upgrade(settings: Settings, release: Path, wheelhouse: Path | None, force: bool, say: Say,
            allow_unsigned: bool = False) -> str:
    """Upgrade to the release in `release` (a signed bundle, or with `allow_unsigned` a wheel with
    its dependencies from the index or `wheelhouse`); return its version. UpgradeRefused: nothing
    changed; UpgradeFailed: tried, rolled back to the last committed release. A bundle's signature
    is checked first, whatever `force` says; a wheel, which carries none, is installed as root only
    on the word of whoever passes --allow-unsigned (said, and audited at each start of it)."""
    if release.suffix != ".pyz" and not allow_unsigned:
        raise UpgradeRefused(f"{release.name} is no signed release bundle (vmgateway-X.Y.Z.pyz); --allow-unsigned"
                             " installs a wheel as it is, on your word (audited)")
    bundle = _trusted_bundle(settings, release) if release.suffix == ".pyz" else None
    layout = Layout(settings.upgrade.root)
    service = service_for(settings.upgrade)
    with _locked(layout):
        recover(settings, layout, service, say)
        state = UpgradeState.load(layout.state_file)
        try:
            version = bundle.manifest.version if bundle else wheel_version(release)
        except InstallError as exc:
            raise UpgradeRefused(str(exc)) from None
        if version == layout.current_version():
            raise UpgradeRefused(f"release {version} is the one running now (--force does not reinstall it)")
        if version in state.failed and not force:
            raise UpgradeRefused(f"release {version} failed its trial before: --force to try it again")
        problems = refusals(settings, release, force)
        if problems:
            raise UpgradeRefused("; ".join(problems))
        say(f"installing release {version} beside {layout.current_version() or 'nothing yet'}")
        try:
            if bundle:
                install_bundle(layout, bundle)
            else:
                say(f"WARNING: {release.name} carries no signature: installing it on the word of whoever ran"
                    " this (--allow-unsigned)")
                install_release(layout, release, wheelhouse)
                note = layout.release(version) / UNSIGNED
                note.write_text(f"installed unsigned with --allow-unsigned from {release}"
                                f" by uid {os.getuid()} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
                fsync_directory(note.parent)
        except (InstallError, BundleError) as exc:
            if version != layout.current_version():  # never the release that runs
                shutil.rmtree(layout.release(version), ignore_errors=True)
            raise UpgradeRefused(f"release {version} could not be installed: {exc}") from None
        _try(settings, layout, service, state, version, say)
        return version


def _trusted_bundle(settings: Settings, path: Path) -> Bundle:
    try:
        bundle = read_bundle(path)
        bundle.check_fits_this_box()
        bundle.check_signed_by(trusted_keys(settings.upgrade.trusted_keys))
    except (BundleError, UntrustedKey) as exc:
        raise UpgradeRefused(str(exc)) from None
    return bundle


def _try(settings: Settings, layout: Layout, service: Service, state: UpgradeState, version: str, say: Say) -> None:
    say("stopping the gateway (it drains first)")
    try:
        service.stop()
    except ServiceError as exc:
        raise UpgradeRefused(f"the gateway could not be stopped, so release {version} was not tried: {exc}") from None
    journal = settings.journal_path
    state.trial, state.trial_started_at, state.snapshot = version, time.time(), None
    if journal.exists():
        state.snapshot = f"journal-before-{version}-{int(state.trial_started_at)}.sqlite"
        snapshot.take(journal, layout.snapshots / state.snapshot)
        say(f"journal snapshot: {layout.snapshots / state.snapshot}")
    state.save(layout.state_file)
    marker = trial.marker(settings)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(marker, f"{version}\n")
    layout.switch_to(version)
    say(f"starting release {version} on trial (loopback only) and checking its health")
    try:
        service.start()
        problems = wait_healthy(settings, service)
    except ServiceError as exc:
        problems = [f"it could not be started: {exc}"]
    if problems:
        reason = "; ".join(problems)
        _roll_back(settings, layout, service, state, f"failed its health check: {reason}", say)
        raise UpgradeFailed(f"release {version} failed its health check ({reason}); rolled back to"
                            f" {state.committed or 'nothing'}")
    _commit(settings, layout, service, state, say)


def _commit(settings: Settings, layout: Layout, service: Service, state: UpgradeState, say: Say) -> None:
    version = state.trial
    assert version is not None
    state.previous, state.committed, state.trial = state.committed, version, None
    state.committed_at = time.time()
    state.save(layout.state_file)
    say(f"release {version} committed; restarting it on its real addresses")
    _prune(layout, state, settings.upgrade.keep_releases)
    try:
        service.stop()
        trial.marker(settings).unlink(missing_ok=True)
        service.start()
        problems = wait_healthy(settings, service, listening_problems)
    except ServiceError as exc:
        problems = [str(exc)]
    if problems:  # it passed on loopback: what differs now is the box (an address, a port taken)
        raise UpgradeFailed(f"release {version} is committed but did not come back on its real addresses:"
                            f" {'; '.join(problems)}")


def _roll_back(settings: Settings, layout: Layout, service: Service | None, state: UpgradeState, why: str,
               say: Say) -> None:
    """Back to the last committed release — never to one that failed — with the journal it can read.
    Without a `service` (at boot, before systemd starts the gateway) only the files are put right."""
    version = state.trial
    assert version is not None
    say(f"rolling back release {version}: {why}")
    layout.logs.mkdir(parents=True, exist_ok=True)
    failed_log = layout.logs / f"{version}-{int(time.time())}.log"
    said = service.log_of_last_start() if service is not None else ""
    write_atomically(failed_log, f"release {version} {why}\n\n" + said)
    if service is not None:
        try:
            service.stop()
        except ServiceError as exc:
            say(f"stopping release {version}: {exc}")
    journal = settings.journal_path
    kept = layout.snapshots / state.snapshot if state.snapshot else None
    migrated = kept is not None and kept.exists() and journal.exists() and (
        snapshot.version_of(journal) > snapshot.version_of(kept))
    if migrated and kept is not None:
        say(f"release {version} migrated the journal; putting back the snapshot {kept.name}")
        snapshot.restore(kept, journal)
    if state.committed:
        layout.switch_to(state.committed)
    else:
        layout.current.unlink(missing_ok=True)
    trial.marker(settings).unlink(missing_ok=True)
    if version not in state.failed:
        state.failed.append(version)
    state.trial = None
    state.rolled_back_at = time.time()
    state.save(layout.state_file)
    shutil.rmtree(layout.release(version), ignore_errors=True)
    say(f"the failed release's log: {failed_log}")
    if state.committed and service is not None:
        say(f"starting release {state.committed} again")
        try:
            service.start()
            problems = wait_healthy(settings, service, listening_problems)
        except ServiceError as exc:
            problems = [str(exc)]
        if problems:
            say(f"release {state.committed} did not come back: {'; '.join(problems)}")


def recover(settings: Settings, layout: Layout, service: Service | None, say: Say) -> None:
    """Finish what a cut-off upgrade left: half-installed releases go, a trial is rolled back."""
    state = UpgradeState.load(layout.state_file)
    running = layout.current_version()
    for half in layout.half_installed():
        if half.name != running:
            say(f"removing the half-installed release {half.name} of an earlier attempt")
            shutil.rmtree(half, ignore_errors=True)
    if state.trial is not None:
        _roll_back(settings, layout, service, state, "was on trial when the upgrade was cut off", say)
    elif trial.marker(settings).exists():  # cut off between commit and restart
        if service is not None:
            service.stop()
        trial.marker(settings).unlink()
        if service is not None:
            service.start()


def recover_now(settings: Settings, say: Say, boot: bool) -> None:
    """`vmgateway upgrade --recover`: settle a cut-off upgrade. With `boot` (the unit ordered
    before the gateway's) the service is neither stopped nor started: systemd starts it next."""
    layout = Layout(settings.upgrade.root)
    with _locked(layout):
        recover(settings, layout, None if boot else service_for(settings.upgrade), say)


def _prune(layout: Layout, state: UpgradeState, keep_releases: int) -> None:
    """Keep upgrade.keep_releases releases (the committed and the previous always), and the
    newest snapshot only: the box's disk is small."""
    protected = {name for name in (state.committed, state.previous) if name}
    newest_first = sorted((p for p in layout.releases.iterdir() if p.is_dir() and p.name not in protected),
                          key=lambda p: p.stat().st_mtime, reverse=True)
    for release in newest_first[max(0, keep_releases - len(protected)):]:
        shutil.rmtree(release, ignore_errors=True)
    if layout.snapshots.exists():
        snapshots = sorted(layout.snapshots.glob("journal-*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in snapshots[1:]:
            old.unlink()
