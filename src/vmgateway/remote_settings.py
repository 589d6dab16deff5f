"""Settings Vetmanager changes remotely, by one path, into one file beside the data.

A remote change (`PATCH /api/v1/settings`, `PUT /api/v1/site/contact`, `…/site/pacs`) is checked
against the keys that may change remotely, validated by the same model as the configuration file
(merged with it: a value the file would refuse is refused), written atomically into
`remote-settings.toml` in the data folder (tomlkit: comments a person adds there stay), and then
applied by the running gateway at once, or — a destination it did not start with — answered
"restart needed".
`load_settings` lays that file over the configuration, so `site form`, `doctor`, `pacs find` and
the next start all see what Vetmanager changed. (These lived in the journal once, and `site form`
printed an old phone number after a PUT.)

Why not write into /etc/vmgateway/vmgateway.toml itself: the gateway runs as an unprivileged user,
and that file also says what root runs and trusts — `upgrade.start_command`, `upgrade.trusted_keys`.
A gateway able to rewrite it could make root run anything at the next upgrade. So the service
writes only this file, in its own folder, and only the keys below are read from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmgateway.config import ConfigError, Settings, config_file, parse_settings, read_config_file
from vmgateway.files import write_toml

REMOTE_FILE = "remote-settings.toml"
CHANGEABLE = ("site.contact", "pacs", "transfers.dicomweb_url", "transfers.hl7_url", "transfers.astm_url",
              "dicom.allowed_calling_aets", "hl7.allowed_peers")
"""Every key (or section) Vetmanager may change remotely. The running gateway applies each at once
(service.Gateway.apply_remote_settings), except a push URL for a destination it did not start
with, or one taken away: those take effect at the next start."""


class RefusedChange(ValueError):
    """A key that may not change remotely, or a value the configuration's model refuses."""


class ConflictingChange(Exception):
    """The remote settings changed since the version the caller read."""


@dataclass(frozen=True)
class Outcome:
    settings: Settings
    """The configuration with every remote setting, as the next start will read it."""
    changed: list[str]
    version: str


def remote_file(data_dir: Path) -> Path:
    return data_dir / REMOTE_FILE


def version_of(data_dir: Path) -> str:
    """The remote settings' version (a hash of the file; that of nothing when there is none)."""
    path = remote_file(data_dir)
    return hashlib.sha256(path.read_bytes() if path.exists() else b"").hexdigest()[:16]


def _root(key: str) -> str | None:
    return next((root for root in CHANGEABLE if key == root or key.startswith(root + ".")), None)


def keys_of(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key the remote settings hold, dotted (`pacs.host`, `site.contact.phone`, …)."""
    found = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += keys_of(value, path + ".")
        else:
            found.append(path)
    return found


def read_remote(data_dir: Path) -> dict[str, Any]:
    """The remote settings (empty without a file); ConfigError for a key that may not be there."""
    path = remote_file(data_dir)
    try:
        if not path.exists():
            return {}
    except OSError as exc:  # e.g. the data folder is the service's alone
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    data = read_config_file(path)
    stray = [key for key in keys_of(data) if _root(key) is None]
    if stray:
        raise ConfigError(f"{path} may hold only {', '.join(CHANGEABLE)}; not {', '.join(stray)}")
    return data


def merged(base: dict[str, Any], remote: dict[str, Any]) -> dict[str, Any]:
    """`base` with `remote` laid over it, key by key (what the remote file does not say, the
    configuration file still does)."""
    result = copy.deepcopy(base)
    for key in keys_of(remote):
        *sections, last = key.split(".")
        node, source = result, remote
        for part in sections:
            node = node.setdefault(part, {})
            source = source[part]
        node[last] = copy.deepcopy(source[last])
    return result


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RefusedChange(f"{key}: no such setting ({part} holds a value, not settings)")
    if value is None:
        node.pop(last, None)  # back to what the configuration file says
    else:
        node[last] = value


def _inner_keys(value: Any) -> list[str]:
    """Every key of a value that is a table, at any depth."""
    if not isinstance(value, dict):
        return []
    return [str(key) for key in value] + [inner for item in value.values() for inner in _inner_keys(item)]


def change(config_file: str | None, data_dir: Path, changes: dict[str, Any], version: str | None) -> Outcome:
    """Validate and write `changes` (dotted keys; None takes a key back to the file's value);
    RefusedChange, ConflictingChange, or OSError when the file cannot be written (then nothing
    changed)."""
    if not changes:
        raise RefusedChange("no changes given")
    refused = [key for key in changes if _root(key) is None]
    if refused:
        raise RefusedChange(f"{', '.join(refused)}: may not change remotely (these may: {', '.join(CHANGEABLE)})")
    dotted = [f"{key}: {inner!r}" for key, value in changes.items() for inner in _inner_keys(value) if "." in inner]
    if dotted:
        raise RefusedChange(f"{dotted[0]}: a key inside a value is a plain name, without dots")
    if version is not None and version != version_of(data_dir):
        raise ConflictingChange(f"the remote settings changed since version {version} (now {version_of(data_dir)}):"
                                " read them again (GET /api/v1/settings)")
    base = read_config_file(config_file) if config_file else {}
    remote = read_remote(data_dir)
    for key, value in changes.items():
        _set(remote, key, value)
    try:
        settings = parse_settings(merged(base, remote), source="the changed settings")
    except ConfigError as exc:
        raise RefusedChange(str(exc)) from None
    write_toml(remote_file(data_dir), remote)
    return Outcome(settings, sorted(changes), version_of(data_dir))


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from the file `config_file(path)` names, or the embedded defaults, with the settings
    Vetmanager changed remotely laid over them (this module).

    A relative `storage.data_dir` in a file is taken relative to the working directory,
    like the default `./var`, so `vmgateway run` and `vmgateway status` agree when run
    from the same place.
    """
    found = config_file(path)
    data = read_config_file(found) if found else {}
    source = f"configuration file {found}" if found else "the embedded defaults"
    settings = parse_settings(data, source=source)
    remote = read_remote(settings.storage.data_dir)
    if not remote:
        return settings
    return parse_settings(merged(data, remote), source=f"{source} with {remote_file(settings.storage.data_dir)}")


def value_at(settings: Settings, key: str) -> Any:
    """The value a dotted key has in `settings` (a section: its whole table)."""
    node: Any = settings.model_dump(mode="json")
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def described_change(before: Settings, after: Settings, keys: list[str]) -> str:
    """Each changed key with its old and new value, for the audit trail (the settings hold no
    secrets: tokens, passwords and keys live in the files they name)."""

    def shown(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return text if len(text) <= 200 else text[:199] + "…"

    return "; ".join(f"{key}: {shown(value_at(before, key))} → {shown(value_at(after, key))}" for key in keys)
