"""`vmgateway host render`: the box's host files, checked by the real tools.

nftables: `nft -c` (check only, in a network namespace the test made — nothing is ever loaded);
systemd-networkd: the real daemon applies the .network files to veth links in a namespace the
test made; systemd: `systemd-analyze verify`; NUT: upsd started on the rendered configuration.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import vmgateway
from tests.support.gateway import free_port, write_config
from tests.support.nut import UPS, NutServer
from tests.support.sites import FORMS, init
from vmgateway.power.nut import NutClient
from vmgateway.power.nut import NutServer as Upsd

NFT_TABLE = "etc/nftables.d/vmgateway.nft"
UNIT = "etc/systemd/system/vmgateway.service"


def rendered(tmp_path: Path, option: int, *flags: str, **sections: dict[str, Any]) -> Path:
    """The files for the form of `option` (with `flags` changed), `sections` added to the configuration."""
    config = tmp_path / "vmgateway.toml"
    if sections:
        write_config(config, sections)
    made = init(config, *FORMS[option], *flags)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    result = vmgateway("host", "render", "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)


def input_rules(ruleset: str) -> list[str]:
    return [line.strip() for line in ruleset.splitlines() if "saddr" in line]


@pytest.mark.peer
@pytest.mark.parametrize("option", sorted(FORMS))
def test_the_firewall_passes_nft_and_opens_only_what_it_should(tmp_path: Path, option: int) -> None:
    out = rendered(tmp_path, option)
    checked = nft_check(out / NFT_TABLE)
    assert checked.returncode == 0, checked.stderr
    ruleset = (out / NFT_TABLE).read_text()
    assert "policy drop" in ruleset and "table inet vmgateway {" in ruleset
    management = "ip saddr { 213.212.63.52, 62.20.41.162-62.20.41.166 } tcp dport { 22, 3000 } accept"
    lan = {1: "192.168.1.0/24", 2: "192.168.10.0/24", 3: "10.1.0.0/16", 4: "192.168.0.0/24"}[option]
    devices = f"ip saddr {{ {lan} }} tcp dport {{ 4006, 2575 }} accept"  # the PACS at .30 is inside the LAN
    rules = input_rules(ruleset)
    assert rules[:2] == [management, devices], rules
    assert all("echo-request" in rule for rule in rules[2:])  # the rest: ping only
    assert '#!/usr/sbin/nft -f\ninclude "/etc/nftables.d/vmgateway.nft"' in (out / "etc/nftables.conf").read_text()


@pytest.mark.peer
def test_the_firewall_follows_the_configured_ports_and_addresses(tmp_path: Path) -> None:
    out = rendered(tmp_path, 4, "--device-networks", "10.20.0.0/16, 192.168.0.128/25", "--pacs-host", "172.16.5.5",
                   dicom={"port": 11112}, hl7={"port": 5000}, astm={"listeners": [{"name": "lab", "port": 5001}]},
                   api={"port": 8443, "allow": [
                       "213.212.63.52", "62.20.41.162-62.20.41.166", "2001:db8::/64"]})
    checked = nft_check(out / NFT_TABLE)
    assert checked.returncode == 0, checked.stderr
    rules = input_rules((out / NFT_TABLE).read_text())
    assert "ip saddr { 213.212.63.52, 62.20.41.162-62.20.41.166 } tcp dport { 22, 8443 } accept" in rules
    assert "ip6 saddr { 2001:db8::/64 } tcp dport { 22, 8443 } accept" in rules
    # the second device network lies inside the LAN: left out, or nft would refuse the overlap
    assert "ip saddr { 192.168.0.0/24, 10.20.0.0/16, 172.16.5.5 } tcp dport { 11112, 5000, 5001 } accept" in rules
    assert not any("3000" in rule or "4006" in rule for rule in rules)


@pytest.mark.peer
def test_nft_check_is_a_real_check(tmp_path: Path) -> None:
    out = rendered(tmp_path, 1)
    broken = tmp_path / "broken.nft"
    broken.write_text((out / NFT_TABLE).read_text().replace("tcp dport", "tcp destport", 1))
    assert nft_check(broken).returncode != 0


def networkd(out: Path) -> dict[str, Any]:
    """Run systemd-networkd on the rendered files, in a network and mount namespace of its own."""
    applied = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, "-m", "tests.support.networkd",
         str(out / "etc/systemd/network"), "enp1s0", "enp2s0"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert applied.returncode == 0, applied.stderr
    result: dict[str, Any] = json.loads(applied.stdout)
    assert result["finished"], result["log"]
    return result


def addresses(result: dict[str, Any], interface: str) -> list[str]:
    (link,) = [link for link in result["addresses"] if link["ifname"] == interface]
    return [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]]


def is_up(result: dict[str, Any], interface: str) -> bool:
    (link,) = [link for link in result["addresses"] if link["ifname"] == interface]
    return "UP" in link["flags"]


def default_route(result: dict[str, Any]) -> tuple[str, str]:
    (route,) = [route for route in result["routes"] if route["dst"] == "default"]
    return route["gateway"], route["dev"]


@pytest.mark.peer
@pytest.mark.parametrize("option, wan, lan, route", [
    (1, ["198.51.100.10/24"], None, ("198.51.100.1", "enp1s0")),
    (2, ["203.0.113.10/29"], ["192.168.10.20/24"], ("203.0.113.9", "enp1s0")),
    (3, None, ["10.1.2.20/16"], ("10.1.0.1", "enp2s0")),
    (4, None, ["192.168.0.20/24"], ("192.168.0.1", "enp2s0")),
])
def test_networkd_sets_up_the_ports_of_each_router_option(tmp_path: Path, option: int, wan: list[str] | None,
                                                          lan: list[str] | None, route: tuple[str, str]) -> None:
    out = rendered(tmp_path, option)
    result = networkd(out)
    for interface, expected in (("enp1s0", wan), ("enp2s0", lan)):
        if expected is None:  # a port the option does not use: down, no address
            assert not is_up(result, interface) and addresses(result, interface) == [], result["log"]
        else:
            assert is_up(result, interface) and addresses(result, interface) == expected, result["log"]
    assert default_route(result) == route
    if option == 3:
        assert "DNS=10.1.0.53\nDNS=10.1.0.54" in (out / "etc/systemd/network/20-vmgateway-lan.network").read_text()


def systemd_verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_the_service_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    out = rendered(tmp_path, 2, hl7={"drain_timeout_s": 100})
    unit = out / UNIT
    verified = systemd_verify(unit)
    assert (verified.returncode, verified.stderr) == (0, "")  # not even a warning
    text = unit.read_text()
    assert f"--config {tmp_path / 'vmgateway.toml'}" in text and "TimeoutStopSec=130" in text  # drain + 30 s
    recover = out / "etc/systemd/system/vmgateway-upgrade-recover.service"
    assert (systemd_verify(recover).returncode, systemd_verify(recover).stderr) == (0, "")
    assert "upgrade --recover --boot" in recover.read_text() and "Before=vmgateway.service" in recover.read_text()
    broken = tmp_path / "vmgateway.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))  # verify warns, and still says 0
    assert "Failed to parse service type" in systemd_verify(broken).stderr


def test_serial_ports_get_their_device_and_group_and_nothing_else_of_dev(tmp_path: Path) -> None:
    out = rendered(tmp_path, 1, astm={"serial": [{"name": "vetscan", "device": "/dev/serial/by-id/usb-FTDI-1"},
                                                 {"name": "horiba", "device": "/dev/ttyUSB1"}]})
    verified = systemd_verify(out / UNIT)
    assert (verified.returncode, verified.stderr) == (0, "")
    lines = (out / UNIT).read_text().splitlines()
    assert [line for line in lines if line.startswith(("BindPaths", "DeviceAllow", "SupplementaryGroups"))] == [
        "SupplementaryGroups=dialout", "BindPaths=-/dev/serial/by-id/usb-FTDI-1",
        "DeviceAllow=/dev/serial/by-id/usb-FTDI-1 rw", "BindPaths=-/dev/ttyUSB1", "DeviceAllow=/dev/ttyUSB1 rw"]
    assert "PrivateDevices=yes" in lines
    without = (rendered(tmp_path / "plain", 1) / UNIT).read_text().splitlines()
    assert not any(line.startswith(("BindPaths", "DeviceAllow", "SupplementaryGroups")) for line in without)


async def _ups_status(port: int) -> str:
    client = NutClient(Upsd("127.0.0.1", port, UPS), timeout=5)  # as the gateway reads it
    try:
        return (await client.variables())["ups.status"]
    finally:
        await client.close()


@pytest.mark.peer
def test_upsd_runs_on_the_rendered_nut_configuration(tmp_path: Path) -> None:
    port = free_port()
    out = rendered(tmp_path, 1, power={"ups": UPS, "nut_port": port})
    nut = out / "etc/nut"
    assert "driver = usbhid-ups" in (nut / "ups.conf").read_text() and "vendorid = 051d" in (nut / "ups.conf").read_text()
    assert (nut / "upsd.conf").read_text().splitlines()[-2] == f"LISTEN 127.0.0.1 {port}"  # loopback only
    assert oct((nut / "upsd.users").stat().st_mode & 0o777) == "0o640"
    monitor = re.search(r"^MONITOR (\S+)@127\.0\.0\.1:(\d+) 1 upsmon (\S+) primary$", (nut / "upsmon.conf").read_text(),
                        re.MULTILINE)
    assert monitor and monitor.group(1) == UPS and int(monitor.group(2)) == port
    password = monitor.group(3)
    assert f"password = {password}" in (nut / "upsd.users").read_text()  # the two files agree
    server = NutServer(rendered=nut, port=port).start()
    try:
        assert asyncio.run(_ups_status(port)) == "OL"
        # upsmon logs in as the rendered upsmon.conf says; with another password it is refused
        assert server.ask(f"USERNAME upsmon\nPASSWORD {password}\nLOGIN {UPS}").split(b"\n")[:3] == [b"OK"] * 3
        assert b"ERR ACCESS-DENIED" in server.ask(f"USERNAME upsmon\nPASSWORD wrong\nLOGIN {UPS}")
    finally:
        server.stop()


def test_render_refuses_an_incomplete_form_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text('[site]\nname = "Kliniken"\n')
    out = tmp_path / "out"
    refused = vmgateway("host", "render", "--config", str(config), "--out", str(out))
    assert refused.returncode == 2 and "site init" in refused.stderr and "site.external_ip is missing" in refused.stderr
    assert not out.exists()
