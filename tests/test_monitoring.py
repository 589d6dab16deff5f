"""The fleet's monitoring as shipped in monitoring/: Debian's promtool and amtool check it, promtool's
unit tests prove each alert's threshold, and a real Prometheus and Alertmanager (on 127.0.0.1) watch
two real gateways — one with a certificate from Vetmanager's CA, one self-signed and pinned — over
HTTPS with the one monitoring token the fleet shares."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.certificates import CertificateAuthority
from tests.support.clients import client, new_token, vmgateway
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk, free_ports, stop_process
from vmgateway.clock import clock_synchronised

MONITORING = Path(__file__).parent.parent / "monitoring"
RULES = MONITORING / "rules" / "vmgateway.yml"
DEADLINE_S = 60


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.peer
def test_the_rules_are_valid_and_every_alert_is_tested_at_its_threshold() -> None:
    checked = run("promtool", "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = MONITORING / "tests" / "vmgateway_test.yml"
    tested = run("promtool", "test", "rules", tests)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    cases = yaml.safe_load(tests.read_text())["tests"]
    firing = {case["alertname"] for test in cases for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    silent = {case["alertname"] for test in cases for case in test.get("alert_rule_test", [])
              if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert names == firing == silent, "every alert is seen firing and seen silent"
    assert len(names) == 14


@pytest.mark.peer
def test_the_example_configurations_are_valid(tmp_path: Path) -> None:
    """As shipped, with its /etc paths pointed at files that exist (promtool reads them)."""
    place = tmp_path / "etc"
    (place / "rules").mkdir(parents=True)
    (place / "rules" / "vmgateway.yml").write_text(RULES.read_text())
    (place / "monitoring.token").write_text("x" * 40)
    (place / "vetmanager-ca.pem").write_text(CertificateAuthority(tmp_path / "pki").cert.read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text((MONITORING / "prometheus.yml").read_text().replace("/etc/prometheus/vmgateway", str(place)))
    checked = run("promtool", "check", "config", config)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    boxes = yaml.safe_load((MONITORING / "boxes" / "example.yml").read_text())
    assert all(target.endswith(":3000") for entry in boxes for target in entry["targets"])
    am = run("amtool", "check-config", MONITORING / "alertmanager.yml")
    assert am.returncode == 0 and "SUCCESS" in am.stdout, am.stdout + am.stderr


class Watcher:
    """A process on 127.0.0.1 with an HTTP API, stopped by the test."""

    def __init__(self, command: list[str], port: int, ready: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: self.get(ready) is not None, f"{command[0]} ready")

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return json.loads(answer.read() or b"null")
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited: {self.proc.stderr.read() if self.proc.stderr else ''}") from None
            return None

    def stop(self) -> None:
        stop_process(self.proc)


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll an HTTP API (no event to await across a process boundary) until `condition` holds, bounded."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {DEADLINE_S} s")


@pytest.fixture
def watchers(tmp_path: Path) -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def prometheus_config(tmp_path: Path, token: Path, ca: Path, box_a: GatewayProcess, box_b: GatewayProcess,
                      alertmanager_port: int) -> Path:
    """monitoring/prometheus.yml as shipped, pointed at this test's files and sped up (1 s scrapes and
    evaluations, every `for:` 0 s: the thresholds themselves are promtool's to prove); plus the
    documented job for a box that keeps its self-signed certificate."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, allow_unicode=True))
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    fleet = config["scrape_configs"][0]
    fleet["authorization"]["credentials_file"] = str(token)
    fleet["tls_config"]["ca_file"] = str(ca)
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "a.yml").write_text(yaml.safe_dump(
        [{"targets": [f"127.0.0.1:{box_a.api_port}"], "labels": {"site": "Åby"}}], allow_unicode=True))
    fleet["file_sd_configs"] = [{"files": [str(tmp_path / "boxes" / "*.yml")], "refresh_interval": "1s"}]
    pinned = {"job_name": "vmgateway-berga", "scheme": "https", "metrics_path": "/api/v1/metrics",
              "authorization": fleet["authorization"],
              "tls_config": {"ca_file": str(box_b.data_dir / "api-cert.pem"), "server_name": "vmgateway"},
              "static_configs": [{"targets": [f"127.0.0.1:{box_b.api_port}"], "labels": {"site": "Berga"}}]}
    config["scrape_configs"].append(pinned)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@pytest.mark.peer
def test_prometheus_scrapes_two_boxes_and_the_failing_one_alerts_through_alertmanager(
        make_gateway: Any, watchers: list[Watcher], tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    issued = ca.issue("box-a", days=365)  # not about to end: that would be an alert of its own
    dead_upstream, prometheus_port, alertmanager_port = free_ports(3)
    box_a = make_gateway(api={"tls_cert": str(issued.cert), "tls_key": str(issued.key)},
                         transfers={"mode": "push", "dicomweb_url": f"http://127.0.0.1:{dead_upstream}/dicomweb",
                                    "allow_plain_http": True})
    box_b = make_gateway()  # pull mode, self-signed, nothing wrong
    token = tmp_path / "monitoring.token"
    token.write_text("fleet-monitoring-" + "k3" * 16 + "\n")
    for box in (box_a, box_b):
        made = vmgateway("token", "create", "monitoring", "--scope", "monitoring", "--from-file", str(token),
                         "--config", str(box.config))
        assert made.returncode == 0, made.stderr
    with client(box_a, new_token(box_a, "vetmanager")) as api:
        assert api.post("/api/v1/transfers/activate").json() == {"active": True}
    [instance] = copies_of_ct_small(tmp_path / "ct", 1)
    assert dcmtk("storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(box_a.port), instance).returncode == 0

    (tmp_path / "am.yml").write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    watchers.append(Watcher(["prometheus-alertmanager", f"--config.file={tmp_path / 'am.yml'}",
                             f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                             "--cluster.listen-address="], alertmanager_port, "/api/v2/status"))
    config = prometheus_config(tmp_path, token, ca.cert, box_a, box_b, alertmanager_port)
    prometheus = Watcher(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{prometheus_port}"], prometheus_port, "/api/v1/status/buildinfo")
    watchers.append(prometheus)

    def targets() -> list[dict[str, Any]] | None:
        found = (prometheus.get("/api/v1/targets") or {}).get("data", {}).get("activeTargets", [])
        return found if len(found) == 2 and all(t["health"] == "up" for t in found) else None

    up = wait_for(targets, "both boxes scraped over HTTPS with the monitoring token")
    assert {t["labels"]["site"] for t in up} == {"Åby", "Berga"}

    def firing() -> list[dict[str, Any]]:
        alerts = (prometheus.get("/api/v1/alerts") or {}).get("data", {}).get("alerts", [])
        return [a for a in alerts if a["state"] == "firing"]

    wait_for(lambda: any(a["labels"]["alertname"] == "VmgatewayDestinationFailing" for a in firing()),
             "the failing box's alert fires")
    machine = set() if clock_synchronised() is not False else {"VmgatewayClockNotSynchronised"}  # not the boxes'
    by_site: dict[str, set[str]] = {}
    for alert in firing():
        by_site.setdefault(alert["labels"]["site"], set()).add(alert["labels"]["alertname"])
    assert by_site.get("Åby", set()) - machine == {"VmgatewayDestinationFailing"}, by_site
    assert by_site.get("Berga", set()) - machine == set(), "the healthy box raises nothing"

    alertmanager = watchers[0]
    received = wait_for(lambda: [a for a in alertmanager.get("/api/v2/alerts") or []
                                 if a["labels"]["alertname"] == "VmgatewayDestinationFailing"],
                        "the alert reaches Alertmanager")
    assert received[0]["labels"]["site"] == "Åby" and received[0]["labels"]["destination"] == "dicomweb"
    assert "Åby: a push destination is failing or paused (dicomweb)" == received[0]["annotations"]["summary"]

    info = prometheus.get("/api/v1/query?query=vmgateway_gateway_info")["data"]["result"]
    ids = {series["metric"]["site"]: series["metric"]["gateway_id"] for series in info}
    for site, box in (("Åby", box_a), ("Berga", box_b)):
        with httpx.Client(verify=False) as https:
            status = https.get(f"https://127.0.0.1:{box.api_port}/api/v1/status",
                               headers={"Authorization": f"Bearer {token.read_text().strip()}"}).json()
        assert ids[site] == status["identity"]["gateway_id"]
