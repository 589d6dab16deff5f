"""`vmgateway site init` and `site form`: the clinic's form into the configuration, and back on paper."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.clients import vmgateway
from tests.support.sites import FORMS, init
from vmgateway.remote_settings import load_settings


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("option", sorted(FORMS))
def test_each_router_option_makes_a_configuration_the_gateway_accepts(tmp_path: Path, option: int) -> None:
    config = tmp_path / "vmgateway.toml"
    made = init(config, *FORMS[option])
    assert made.returncode == 0, made.stderr
    settings = load_settings(config)
    assert settings.site.router_option == option
    assert settings.site.one_to_one_nat is (option == 3)  # follows from the option unless stated
    assert settings.pacs.poll is (option == 4)  # a PACS on the form is one the gateway polls
    assert settings.site.contact.name == "Åsa Öberg"
    assert str(settings.storage.data_dir) == "/var/lib/vmgateway"  # a new file: where the unit keeps data


def test_the_form_prints_in_swedish_and_english_with_the_settings_for_the_devices(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    assert init(config, *FORMS[4]).returncode == 0
    with config.open("a") as more:
        more.write('\n[[astm.listeners]]\nname = "hematology"\nport = 5001\n'
                   '\n[[astm.serial]]\nname = "chemistry"\ndevice = "/dev/ttyUSB0"\n')
    swedish = vmgateway("site", "form", "--config", str(config))
    assert swedish.returncode == 0, swedish.stderr
    text = swedish.stdout
    assert "Anläggning:" in text and "Veterinären" in text
    assert "4 – Portvidarebefordran (LAN-porten)" in text and "En-till-en-NAT:                    Nej" in text
    assert "Kontaktperson" in text and "Åsa Öberg" in text and "asa@example.se" in text
    assert "CLINIC_PACS" in text and "11112" in text
    modalities = text[text.index("Inställningar för modaliteter"):text.index("Inställningar för labbinstrument")]
    assert "192.168.0.20" in modalities and "4006" in modalities and "VM_GATEWAY" in modalities
    instruments = text[text.index("Inställningar för labbinstrument (HL7)"):]
    assert "192.168.0.20" in instruments and "2575" in instruments
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "Routerns IP-adress: 192.168.0.1" in lines and "Nätmask: 255.255.255.0" in lines
    assert "DNS-servrar: (routern)" in lines
    astm = lines[lines.index("Inställningar för labbinstrument (ASTM)"):]
    assert astm[1:3] == ["hematology: 192.168.0.20, port 5001", "chemistry: seriell port /dev/ttyUSB0, 9600 baud"]
    english = vmgateway("site", "form", "--config", str(config), "--lang", "en").stdout
    assert "Site:" in english and "Port forwarding (LAN port)" in english and "Settings for lab instruments" in english


def test_in_a_dmz_the_devices_send_to_the_external_address(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    assert init(config, *FORMS[1]).returncode == 0
    text = vmgateway("site", "form", "--config", str(config), "--lang", "en").stdout
    modalities = text[text.index("Settings for modalities"):]
    assert "198.51.100.10" in modalities
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "WAN/DMZ network: 198.51.100.0/24" in lines and "Router IP address: 198.51.100.1" in lines
    assert "ASTM" not in text  # no ASTM instruments configured: no section for them


@pytest.mark.parametrize("change, expected", [
    (["--internal-ip", "192.168.1.20"], "site.internal_ip is set but option 1 (DMZ) does not use the LAN port"),
    (["--one-to-one-nat", "yes"], "site.one_to_one_nat = true contradicts site.router_option = 1"),
    (["--external-ip", "203.0.113.5"], "site.external_ip 203.0.113.5 is not in site.wan_network 198.51.100.0/24"),
    (["--router-ip", "192.168.1.1"], "site.router_ip 192.168.1.1 is not in site.wan_network"),
    (["--router-option", "3"], "site.internal_ip is missing: option 3 uses the LAN port"),
    (["--external-ip", "300.1.1.1"], "site.external_ip = '300.1.1.1': an IP address"),
    (["--lan-network", "192.168.1.0/33"], "site.lan_network"),
    (["--router-option", "5"], "site.router_option = 5"),
    (["--contact-email", "not an address"], "site.contact.email"),
    (["--pacs-port", "eleven"], "--pacs-port 'eleven': a whole number"),
])
def test_a_wrong_form_is_refused_naming_the_key_and_nothing_is_written(tmp_path: Path, change: list[str],
                                                                       expected: str) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text('[dicom]\nport = 4106\n')
    before = digest(config)
    refused = init(config, *FORMS[1], *change)
    assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
    assert digest(config) == before and not (tmp_path / "vmgateway.toml.bak").exists()


def test_a_missing_answer_is_named(tmp_path: Path) -> None:
    refused = init(tmp_path / "vmgateway.toml", "--name", "Kliniken")
    assert refused.returncode == 2
    for key in ("site.external_ip is missing", "site.lan_network is missing", "site.router_ip is missing",
                "site.contact needs a name"):
        assert key in refused.stderr
    assert not (tmp_path / "vmgateway.toml").exists()


@pytest.mark.peer
def test_init_keeps_the_rest_of_the_configuration_and_the_previous_file(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text('# Box 17, Smådjurskliniken\n[dicom]\nport = 4106  # the X-ray is set to this\nae_title = "VM_GW_2"\n'
                      '\n[site]\nname = "Old name"\n')
    previous = config.read_bytes()
    assert init(config, *FORMS[2]).returncode == 0
    settings = load_settings(config)
    assert (settings.dicom.port, settings.dicom.ae_title, settings.site.name) == (4106, "VM_GW_2", "Smådjurskliniken")
    assert (tmp_path / "vmgateway.toml.bak").read_bytes() == previous
    changed = init(config, "--contact-phone", "08-123 456")  # one answer changed, the rest kept
    assert changed.returncode == 0, changed.stderr
    again = load_settings(config)
    assert again.site.contact.phone == "08-123 456" and again.site.internal_ip == "192.168.10.20"
    written = config.read_text()  # the person's comments stay where they were
    assert written.startswith("# Box 17, Smådjurskliniken\n[dicom]\nport = 4106  # the X-ray is set to this\n")


def test_init_asks_rechecks_a_wrong_answer_and_keeps_a_value_on_enter(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    assert init(config, *FORMS[1]).returncode == 0
    # name (Enter: keep), router option 2, external ip: wrong then right, wan network (keep), internal ip,
    # lan network (keep), router ip (keep), dns (keep), contact (keep ×3), PACS (none)
    answers = "\n2\n300.1.1.1\n198.51.100.11\n\n192.168.1.20\n\n\n\n\n\n\n\n"
    asked = init(config, answers=answers)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "not valid" in asked.stdout and "External IP address" in asked.stdout
    assert "Name servers, comma-separated (empty: the router): " in asked.stdout  # no value, no `[]`
    settings = load_settings(config)
    assert settings.site.name == "Djurkliniken i Åby"  # kept
    assert (settings.site.router_option, settings.site.external_ip, settings.site.internal_ip) == (
        2, "198.51.100.11", "192.168.1.20")


def test_init_asks_in_swedish_and_shows_the_defaults(tmp_path: Path) -> None:
    """--lang sv (the default): the questions and what is said between them; an embedded default
    (the PACS port) shown as the value Enter keeps."""
    config = tmp_path / "vmgateway.toml"
    answers = "Kliniken\n1\n198.51.100.10\n198.51.100.0/24\n192.168.1.0/24\n10.9.9.1\n\nÅsa\n08-1\n\n10.0.0.30\n\nPACS\n" \
              "\n198.51.100.1\n"
    asked = subprocess.run([sys.executable, "-m", "vmgateway", "site", "init", "--config", str(config), "--ask"],
                           input=answers, capture_output=True, text=True, timeout=60)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "Extern IP-adress (den Vetmanager ansluter till): " in asked.stdout
    assert "PACS-serverns port [104]: " in asked.stdout
    assert "Formuläret stämmer inte ihop än:" in asked.stdout
    assert "site.router_ip 10.9.9.1 ligger inte i site.wan_network 198.51.100.0/24" in asked.stdout
    settings = load_settings(config)
    assert (settings.pacs.host, settings.pacs.port, settings.site.router_ip) == ("10.0.0.30", 104, "198.51.100.1")


def test_init_asking_gives_up_after_repeated_wrong_answers(tmp_path: Path) -> None:
    refused = init(tmp_path / "vmgateway.toml", answers="Kliniken\n" + "9\n" * 10)
    assert refused.returncode == 2 and "site.router_option: no valid answer after 5 tries" in refused.stderr


def test_a_form_file_fills_in_site_and_pacs_and_nothing_else(tmp_path: Path) -> None:
    form = tmp_path / "form.toml"
    form.write_text(
        '[site]\nname = "Kliniken"\nrouter_option = 3\nexternal_ip = "203.0.113.50"\ninternal_ip = "10.0.0.20"\n'
        'lan_network = "10.0.0.0/24"\nrouter_ip = "10.0.0.1"\n\n[site.contact]\nname = "Per"\nphone = "123"\n\n'
        '[pacs]\nhost = "10.0.0.30"\nport = 104\nae_title = "PACS"\npoll = false\n')
    config = tmp_path / "vmgateway.toml"
    made = init(config, "--from", str(form))
    assert made.returncode == 0, made.stderr
    written = tomllib.loads(config.read_text())
    assert written["site"]["one_to_one_nat"] is True and written["pacs"]["poll"] is False  # stated: kept
    form.write_text(form.read_text() + '\n[dicom]\nport = 1\n')
    stray = init(config, "--from", str(form))
    assert stray.returncode == 2 and "holds only [site] and [pacs], not dicom" in stray.stderr


def test_site_form_says_what_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text('[site]\nname = "Kliniken"\n')
    printed = vmgateway("site", "form", "--config", str(config))
    assert printed.returncode == 1 and "Kliniken" in printed.stdout
    assert "ofullständigt: site.external_ip saknas (den externa IP-adressen)" in printed.stderr  # Swedish, as the form
    english = vmgateway("site", "form", "--config", str(config), "--lang", "en")
    assert "incomplete: site.external_ip is missing" in english.stderr


def test_init_asks_again_only_what_does_not_add_up_and_keeps_the_other_answers(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    assert init(config, *FORMS[1]).returncode == 0  # option 1: WAN network 198.51.100.0/24
    # name, option, external ip, wan network, lan network: kept; router ip 10.9.9.1 (valid alone, but
    # outside the WAN network); dns, contact ×3, PACS: kept. Then only the WAN network (kept) and
    # the router address are asked again.
    answers = "\n" * 5 + "10.9.9.1\n" + "\n" * 5 + "\n198.51.100.254\n"
    asked = init(config, answers=answers)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "site.router_ip 10.9.9.1 is not in site.wan_network 198.51.100.0/24" in asked.stdout
    again = asked.stdout.split("does not add up yet")[1]
    assert again.count("[") == 2 and "Router address" in again and "Site name" not in again
    settings = load_settings(config)
    assert (settings.site.name, settings.site.router_ip) == ("Djurkliniken i Åby", "198.51.100.254")
