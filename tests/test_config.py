"""Configuration: embedded defaults, TOML, and refusals that name the key and what is allowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support.sites import FORMS
from vmgateway.config import ConfigError, Settings, config_file, parse_settings
from vmgateway.remote_settings import load_settings


def test_defaults_come_from_the_site_form() -> None:
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.dicom.port == 4006 and settings.dicom.ae_title == "VM_GATEWAY"
    assert settings.hl7.port == 2575 and settings.api.port == 3000
    assert settings.dicom.bind == settings.hl7.bind == settings.api.bind == "0.0.0.0"
    assert settings.storage.data_dir == Path("./var") and settings.storage.min_free_mb == 1024
    assert settings.dicom.stable_after_s == 60 and settings.dicom.max_associations == 10
    assert settings.dicom.max_pdu == 2**20


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[dicom]\nport = 11112\nae_title = "CLINIC_GW"\nallowed_calling_aets = ["XRAY1"]\n')
    settings = load_settings(path)
    assert (settings.dicom.port, settings.dicom.ae_title) == (11112, "CLINIC_GW")
    assert settings.dicom.allowed_calling_aets == ["XRAY1"]
    assert settings.hl7.port == 2575


def test_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[hl7]\nport = 12575\n")
    monkeypatch.setenv("VMGATEWAY_CONFIG", str(path))
    assert load_settings(None).hl7.port == 12575


def test_one_rule_finds_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, else $VMGATEWAY_CONFIG, else the box's file when it exists, else the defaults."""
    import vmgateway.config

    box, env, given = (tmp_path / name for name in ("box.toml", "env.toml", "given.toml"))
    monkeypatch.setattr(vmgateway.config, "BOX_CONFIG", str(box))
    monkeypatch.delenv("VMGATEWAY_CONFIG", raising=False)
    assert config_file(None) is None and load_settings(None) == Settings()
    box.write_text("[hl7]\nport = 1001\n")
    assert config_file(None) == str(box) and load_settings(None).hl7.port == 1001
    env.write_text("[hl7]\nport = 1002\n")
    monkeypatch.setenv("VMGATEWAY_CONFIG", str(env))
    assert config_file(None) == str(env) and load_settings(None).hl7.port == 1002
    given.write_text("[hl7]\nport = 1003\n")
    assert config_file(given) == str(given) and load_settings(given).hl7.port == 1003


def test_every_command_follows_the_environment_and_says_what_it_used(tmp_path: Path) -> None:
    """site init, token, status and host unit once disagreed on which file they used."""
    config = tmp_path / "box.toml"
    env = {**os.environ, "VMGATEWAY_CONFIG": str(config)}

    def vmgateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vmgateway", *args], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path)

    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    made = vmgateway("token", "create", "vetmanager-server")
    assert made.returncode == 0, made.stderr
    assert f"vmgateway: configuration {config}; data {tmp_path / 'data'}" in made.stderr
    assert f"no journal at {tmp_path / 'data' / 'journal.sqlite'} yet: making a new one" in made.stderr
    assert (tmp_path / "data" / "journal.sqlite").exists() and not (tmp_path / "var").exists()
    again = vmgateway("token", "create", "monitoring")
    assert again.returncode == 0 and "no journal" not in again.stderr
    status = vmgateway("status", "--json")
    assert status.returncode == 0 and f"configuration {config}" in json.loads(status.stdout)["used"]
    unit = vmgateway("host", "unit", "--executable", "/opt/vmgateway/current/venv/bin/vmgateway")
    assert f"ExecStart=/opt/vmgateway/current/venv/bin/vmgateway run --config {config}" in unit.stdout
    init = vmgateway("site", "init", "--no-ask", *FORMS[1])
    assert f"wrote {config}" in init.stdout, init.stdout + init.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dicom": {"port": 70000}}, "dicom.port = 70000: Input should be less than or equal to 65535"),
        ({"dicom": {"port": "x"}}, "dicom.port = 'x': Input should be a valid integer"),
        ({"dicom": {"ae_title": "A_TITLE_LONGER_THAN_16"}}, "dicom.ae_title = 'A_TITLE_LONGER_THAN_16': an AE title has at most 16"),
        ({"dicom": {"ae_title": "   "}}, "dicom.ae_title = '   ': an AE title needs 1 to 16 characters"),
        ({"dicom": {"allowed_calling_aets": ["OK", "BAD\\AE"]}}, "dicom.allowed_calling_aets.1 = 'BAD\\\\AE': an AE title uses printable ASCII"),
        ({"dicom": {"bind": "localhost"}}, "dicom.bind = 'localhost': a bind address is an IP address"),
        ({"storage": {"min_free_mb": -1}}, "storage.min_free_mb = -1: Input should be greater than or equal to 0"),
        ({"dicom": {"prot": 1}}, "dicom.prot: unknown key (allowed here: engine, bind, port, ae_title,"),
        ({"dicmo": {}}, "dicmo: unknown key (allowed here: site, pacs, storage, dicom, hl7, api, power, transfers, worklist, astm, lab, upgrade)"),
        ({"transfers": {"mode": "push"}}, 'transfers: transfers.mode = "push" needs dicomweb_url, hl7_url or astm_url'),
        ({"transfers": {"mode": "both"}}, "transfers.mode = 'both': Input should be 'pull' or 'push'"),
        ({"dicom": {"engine": "twisted"}}, "dicom.engine = 'twisted': Input should be 'asyncio' or 'pynetdicom'"),
        ({"transfers": {"dicomweb_url": "http://archive.example/dicom-web"}},
         "transfers: transfers.dicomweb_url is plain http://: use https:// or set allow_plain_http = true"),
        ({"transfers": {"hl7_url": "ftp://x"}}, "transfers.hl7_url = 'ftp://x': an https:// URL"),
        ({"transfers": {"auth": "bearer"}}, 'transfers: transfers.auth = "bearer" needs token_file'),
        ({"transfers": {"max_attempts": 0}}, "transfers.max_attempts = 0: Input should be greater than or equal to 1"),
        ({"power": {"nut_port": 0}}, "power.nut_port = 0: Input should be greater than or equal to 1"),
        ({"power": {"ups": "my ups"}}, "power.ups = 'my ups': String should match pattern"),
        ({"power": {"poll_interval_s": 0.01}}, "power.poll_interval_s = 0.01: Input should be greater than or equal to 0.2"),
        ({"power": {"password_file": "/nonexistent/nut-password"}},
         "power.password_file = '/nonexistent/nut-password': a file that exists"),
        ({"power": {"shutdown_command": "poweroff"}}, "power.shutdown_command = 'poweroff': Input should be a valid list"),
        ({"upgrade": {"service": "commands"}},
         'upgrade: upgrade.service = "commands" needs start_command, stop_command and status_command'),
        ({"upgrade": {"service": "runit"}}, "upgrade.service = 'runit': Input should be 'systemd' or 'commands'"),
        ({"site": {"wan_interface": "a-very-long-interface-name"}}, "site.wan_interface"),
        ({"site": {"lan_network": "192.168.1.0/33"}}, "site.lan_network = '192.168.1.0/33'"),
        ({"lab": {"instruments": [{"name": "vetlab", "host": "10.0.0.9", "port": 9100, "charset": "UNICODE UTF-16"}]}},
         "lab.instruments.0.charset = 'UNICODE UTF-16': a charset whose text cannot break an MLLP frame"),
        ({"lab": {"instruments": [{"name": "vetlab", "host": "10.0.0.9", "port": 9100,
                                   "sending_facility": "VET\x1cCLINIC"}]}},
         "lab.instruments.0.sending_facility = 'VET\\x1cCLINIC': U+001C is a control character"),
    ],
)
def test_wrong_values_are_refused_by_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings(data)
    assert expected in str(refused.value)


def test_every_wrong_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings({"dicom": {"port": 0, "max_associations": 0}})
    assert "dicom.port = 0" in str(refused.value) and "dicom.max_associations = 0" in str(refused.value)


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[dicom\nport = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(broken)


def test_run_refuses_to_start_on_a_wrong_value(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[dicom]\nport = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "vmgateway", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"configuration file {path} is not valid" in result.stderr
    assert "dicom.port = 0: Input should be greater than or equal to 1" in result.stderr


def test_the_defaults_in_the_readme_are_the_embedded_defaults() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme[readme.index("```toml\n[site]") + len("```toml\n"):]
    assert parse_settings(tomllib.loads(block[:block.index("```")])) == Settings()
