"""`vmgateway doctor` against real peers, in a private network namespace the test made.

The firewall check reads the live ruleset; the tests load the rendered table into their own
namespace (loopback only, thrown away afterwards), never into the machine's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certificates import CertificateAuthority
from tests.support.clients import doctor
from tests.support.gateway import GatewayProcess, free_ports, stop_process
from tests.support.netns import loopback_only
from tests.support.nut import UPS, NutServer
from tests.support.sites import FORMS, init
from tests.support.upstream import Step, Upstream
from vmgateway.host.firewall import ruleset
from vmgateway.remote_settings import load_settings


@pytest.fixture
def network() -> Iterator[None]:
    with loopback_only():
        yield


def levels(findings: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {check: finding["level"] for check, finding in findings.items()}


def load_firewall(config: Path, tmp_path: Path, **changes: Any) -> None:
    """The table for this configuration (or one changed from it), loaded into this test's namespace."""
    settings = load_settings(config)
    for section, values in changes.items():
        settings = settings.model_copy(update={section: getattr(settings, section).model_copy(update=values)})
    table = tmp_path / "firewall.nft"
    table.write_text(ruleset(settings))
    subprocess.run(["nft", "-f", str(table)], check=True, capture_output=True, timeout=30)


def storescp(port: int) -> subprocess.Popen[str]:
    """dcmtk's storescp as the clinic's PACS (it answers C-ECHO)."""
    proc = subprocess.Popen(["storescp", "-aet", "CLINIC_PACS", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 20  # it says nothing when it listens: try to connect (bounded)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_process(proc)
                raise AssertionError("storescp did not start listening") from None
            time.sleep(0.05)


def healthy_box(make_gateway: Any, tmp_path: Path, upstream: Upstream, ca: CertificateAuthority,
                nut: NutServer, pacs_port: int) -> GatewayProcess:
    gateway: GatewayProcess = make_gateway(
        start=False, power={"enabled": True, "nut_port": nut.port, "ups": UPS},
        pacs={"host": "127.0.0.1", "port": pacs_port, "ae_title": "CLINIC_PACS"},
        transfers={"mode": "push", "hl7_url": upstream.url, "ca_file": str(ca.cert)},
        astm={"listeners": [{"name": "lab", "bind": "127.0.0.1", "port": free_ports(1)[0]}]})
    made = init(gateway.config, *FORMS[2])
    assert made.returncode == 0, made.stderr
    gateway.start()
    return gateway


@pytest.mark.peer
def test_a_healthy_box_is_all_ok_and_each_fault_is_found_and_explained(network: None, make_gateway: Any,
                                                                       tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    pacs_port = free_ports(1)[0]
    nut = NutServer().start()
    pacs = storescp(pacs_port)
    try:
        with Upstream(tls=ca.issue("vetmanager"), default=Step(204)) as upstream:
            gateway = healthy_box(make_gateway, tmp_path, upstream, ca, nut, pacs_port)
            load_firewall(gateway.config, tmp_path)
            status, findings = doctor(gateway.config, "clock")  # this machine's clock may not be NTP-synchronised
            assert status == 0, findings
            assert set(levels(findings).values()) == {"OK"}
            assert set(findings) == {"overall", "config", "site", "dicom", "hl7", "astm lab", "api", "disk", "ups",
                                     "pacs", "upstream (hl7)", "transfers", "certificate", "firewall"}
            assert findings["overall"]["summary"].startswith("commissioning: Vetmanager activates transfers")
            assert "answers C-ECHO as VM_GATEWAY" in findings["dicom"]["summary"]
            assert "C-ECHO to CLINIC_PACS@127.0.0.1" in findings["pacs"]["summary"]
            assert "online (OL)" in findings["ups"]["summary"]
            assert [r.path for r in upstream.received] == ["/hl7"]  # one OPTIONS: nothing was sent

            nut.set("ups.status", "OB DISCHRG")  # mains out: a warning, exit 1
            status, findings = doctor(gateway.config, "clock")
            assert status == 1 and levels(findings)["ups"] == "WARN" and "mains" in findings["ups"]["advice"]
            # the first line says what the page says: the box's own problem makes it need attention
            assert findings["overall"]["summary"] == "attention: the UPS is on battery"
            assert list(findings)[0] == "overall" and levels(findings)["overall"] == "WARN"
    finally:
        stop_process(pacs)
        nut.stop()


def test_faults_a_technician_would_hunt_for(network: None, make_gateway: Any, tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")  # its certificates last two days
    api = ca.issue("gateway-api")
    nut_port, pacs_port = free_ports(2)  # nothing listens on either
    with Upstream(tls=ca.issue("vetmanager"), default=Step(401)) as upstream:
        gateway: GatewayProcess = make_gateway(
            start=False, power={"enabled": True, "nut_port": nut_port, "ups": UPS},
            pacs={"host": "127.0.0.1", "port": pacs_port, "ae_title": "CLINIC_PACS"},
            transfers={"mode": "push", "hl7_url": upstream.url, "ca_file": str(ca.cert)},
            api={"tls_cert": str(api.cert), "tls_key": str(api.key)},
            storage={"min_free_mb": 2**40})  # more than any disk here: nothing would be accepted
        status, findings = doctor(gateway.config, "clock")  # not running, no form, no firewall
    assert status == 2
    expected = {"overall": "FAIL", "config": "OK", "site": "WARN", "dicom": "FAIL", "hl7": "FAIL", "api": "FAIL", "disk": "FAIL",
                "ups": "FAIL", "pacs": "FAIL", "upstream (hl7)": "FAIL", "certificate": "WARN", "firewall": "FAIL"}
    assert levels(findings) == expected
    for check, level in expected.items():
        assert (findings[check]["advice"] != "") is (level != "OK"), check  # every fault says what to do
    assert "site init" in findings["site"]["advice"]
    assert "is the gateway running?" in findings["dicom"]["advice"]
    assert "min_free_mb" in findings["disk"]["summary"]
    assert "refuses our credentials (HTTP 401)" in findings["upstream (hl7)"]["summary"]
    assert "days left" in findings["certificate"]["summary"]
    assert "not loaded" in findings["firewall"]["summary"]
    assert "registered there" in findings["pacs"]["advice"]
    reasons = findings["overall"]["summary"]
    # never activated: commissioning, where only the box's own problems count (a wrong upstream shows above)
    assert reasons == ("attention: the UPS is low battery or unreadable; the data disk is below storage.min_free_mb:"
                       " nothing new is accepted; dicom is failing; hl7 is failing; api is failing; pacs is failing")


@pytest.mark.peer
def test_a_firewall_that_differs_from_the_configuration_fails(network: None, make_gateway: Any,
                                                              tmp_path: Path) -> None:
    gateway: GatewayProcess = make_gateway(start=False)
    assert init(gateway.config, *FORMS[3]).returncode == 0
    load_firewall(gateway.config, tmp_path, api={"allow": ["213.212.63.52", "198.51.100.99"]})  # stale
    others = ("site", "listeners", "disk", "clock", "ups", "pacs", "upstream", "certificates")
    status, findings = doctor(gateway.config, *others)
    assert status == 2 and "differs from what the configuration calls for" in findings["firewall"]["summary"]
    subprocess.run(["nft", "delete", "table", "inet", "vmgateway"], check=True, timeout=30)
    load_firewall(gateway.config, tmp_path)
    assert doctor(gateway.config, *others)[0] == 0


def test_a_broken_configuration_is_named_and_nothing_else_is_tried(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text("[dicom]\nport = 70000\n")
    status, findings = doctor(config)
    assert status == 2 and list(findings) == ["config"]
    assert "dicom.port = 70000" in findings["config"]["advice"]
    unknown = subprocess.run([sys.executable, "-m", "vmgateway", "doctor", "--config", str(config), "--skip", "dns"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no check named dns" in unknown.stderr


def test_items_that_will_not_reach_vetmanager_and_a_wrong_url_are_named(make_gateway: Any) -> None:
    from tests.support.push import dead_count, pushing_hl7, send

    only = ("site", "listeners", "disk", "clock", "ups", "pacs", "certificates", "firewall", "release")
    waiting = make_gateway(storage={"min_free_mb": 1})  # pull mode, transfers not yet activated
    send(waiting, "WAITS-1")
    status, findings = doctor(waiting.config, *only)
    assert (status, levels(findings)["transfers"]) == (1, "WARN"), findings
    assert "transfers are off; 1 item(s) waiting, the oldest for" in findings["transfers"]["summary"]
    assert "nothing is lost" in findings["transfers"]["advice"]
    assert findings["overall"]["summary"] == ("commissioning: Vetmanager activates transfers once the clinic's"
                                              " devices are connected; 1 item(s) wait for it, as they should")

    with Upstream(default=Step(400)) as upstream:  # refuses every message: it dies at its first attempt
        pushing, _ = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, max_attempts=1)
        send(pushing, "DIES-1")
        pushing.wait_until(lambda lines: dead_count(lines) == 1, "the message is dead")
        upstream.default = Step(404)  # and the URL turns out wrong
        status, findings = doctor(pushing.config, *only)
    assert status == 2 and levels(findings) == {"overall": "FAIL", "config": "OK", "upstream (hl7)": "FAIL",
                                                "transfers": "FAIL"}
    assert findings["overall"]["summary"].startswith("attention: 1 item(s) dead: given up on; destination hl7")
    assert "1 item(s) dead" in findings["transfers"]["summary"]
    assert "POST /api/v1/transfers/retry" in findings["transfers"]["advice"]
    assert "does not exist there (HTTP 404)" in findings["upstream (hl7)"]["summary"]
    assert "transfers.hl7_url" in findings["upstream (hl7)"]["advice"]
