"""Settings Vetmanager changes remotely: one path into one file, seen by every command, applied at
once where safe, "restart needed" where not; wrong changes refused with nothing changed."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import client, new_token, vmgateway
from tests.support.gateway import GatewayProcess, free_ports

CONTACT = {"name": "Åsa Öberg", "phone": "+46 70 123 45 67", "email": "asa@example.se"}


def remote_file(gateway: GatewayProcess) -> Path:
    return gateway.data_dir / "remote-settings.toml"


def audit(gateway: GatewayProcess) -> list[str]:
    with gateway.journal() as conn:
        return [row[0] for row in conn.execute("SELECT detail FROM events WHERE kind = 'audit' ORDER BY id")]


def refused(api: httpx.Client, changes: dict[str, Any], status: int, said: str, **more: Any) -> None:
    answer = api.patch("/api/v1/settings", json={"changes": changes} | more)
    assert answer.status_code == status and said in answer.json()["detail"], answer.text


def test_remote_changes_are_kept_applied_and_seen_by_every_command(make_gateway: Any) -> None:
    gateway = make_gateway(site={"name": "Kliniken", "contact": CONTACT})
    with client(gateway, new_token(gateway, "vetmanager")) as api:
        shown = api.get("/api/v1/settings").json()
        assert shown["remote"] == {} and shown["restart_needed"] == [] and shown["file"] == str(gateway.config)
        assert {"pacs", "site.contact", "transfers.hl7_url"} <= set(shown["changeable"])

        # the site form's PUT takes the same path: applied at once, kept, and `site form` prints it
        changed = api.put("/api/v1/site/contact", json=CONTACT | {"phone": "08-555 12 34"})
        assert changed.status_code == 200 and changed.json()["site"]["contact"]["phone"] == "08-555 12 34"
        assert tomllib.loads(remote_file(gateway).read_text())["site"]["contact"]["phone"] == "08-555 12 34"
        printed = vmgateway("site", "form", "--config", str(gateway.config))
        assert "08-555 12 34" in printed.stdout and "+46 70 123 45 67" not in printed.stdout

        # the PACS applies at once: the poller asks the new one
        pacs_port = free_ports(1)[0]
        version = api.get("/api/v1/settings").json()["version"]
        answer = api.patch("/api/v1/settings", json={"version": version, "changes": {
            "pacs.host": "127.0.0.1", "pacs.port": pacs_port, "pacs.ae_title": "NEW_PACS"}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["restart_needed"] == [] and answer.json()["version"] != version
        assert api.get("/api/v1/site").json()["pacs"]["ae_title"] == "NEW_PACS"
        poll = api.post("/api/v1/pacs/poll", timeout=60).json()
        assert poll["ok"] is False and str(pacs_port) in poll["error"], poll  # nobody listens there: it tried
        # polling switched on remotely polls at once, not an interval (here an hour) later
        seen = len(gateway.log_lines)
        switched = api.patch("/api/v1/settings", json={"changes": {"pacs.poll": True, "pacs.interval_s": 3600}})
        assert switched.status_code == 200, switched.text
        gateway.wait_for_log("pacs poll failed", timeout=30, after=seen)

        # a URL for a destination this (pull mode) gateway did not start with waits for the next start
        later = api.patch("/api/v1/settings", json={"changes": {"transfers.hl7_url": "https://vm.example/hl7"}})
        assert later.json()["restart_needed"] == ["transfers.hl7_url"]
        shown = api.get("/api/v1/settings").json()
        assert shown["restart_needed"] == ["transfers.hl7_url"] and shown["settings"]["transfers"]["hl7_url"] == ""

        before = remote_file(gateway).read_bytes()
        refused(api, {"api.allow": ["0.0.0.0/0"]}, 400, "api.allow: may not change remotely")
        refused(api, {"pacs.port": 0}, 400, "pacs.port = 0")
        refused(api, {"site.contact.email": "no at sign"}, 400, "site.contact.email")
        refused(api, {"pacs.host.name": "x"}, 400, "pacs.host.name: no such setting")
        # each value as it will be used (the destination once paused for good on these, with tracebacks)
        for url, said in (("https://", "a URL with a host"), ("https://[::1", "Invalid IPv6 URL"),
                          ("https://vm.example:99999/hl7", "Port out of range"),
                          ("https://vm.example/\x00hl7", "without spaces or control characters"),
                          ("https://vm:s3cret@vm.example/hl7", "without a user or password")):
            answer = api.patch("/api/v1/settings", json={"changes": {"transfers.hl7_url": url}})
            assert answer.status_code == 400 and said in answer.json()["detail"], answer.text
            assert "s3cret" not in answer.text  # a refusal does not show the password back
        refused(api, {"pacs.ae_title": "NEW\r\nPACS"}, 400, "pacs.ae_title")
        refused(api, {"pacs.ae_title": "A_NAME_LONGER_THAN_16"}, 400, "at most 16 characters")
        refused(api, {"pacs.host": "pacs; rm -rf /"}, 400, "pacs.host")
        refused(api, {"site.contact.name": "Anna\nPACS: 10.6.6.6"}, 400, "site.contact.name")  # a forged line
        refused(api, {"pacs.port": 104}, 409, "changed since version 0123", version="0123")
        remote_file(gateway).with_name("remote-settings.toml.bak").unlink()
        remote_file(gateway).with_name("remote-settings.toml.bak").mkdir()  # the file cannot be written
        refused(api, {"pacs.port": 104}, 503, "could not be written")
        assert remote_file(gateway).read_bytes() == before, "a refused change changes nothing"
        assert api.get("/api/v1/site").json()["pacs"]["port"] == pacs_port
    contact, pacs, polling, url = [said for said in audit(gateway) if "settings changed" in said]
    assert "pacs.poll: false → true" in polling
    assert contact.startswith("vetmanager: settings changed: site.contact: {") and '"08-555 12 34"}' in contact
    assert pacs == (f'vetmanager: settings changed: pacs.ae_title: "" → "NEW_PACS"; pacs.host: "" → "127.0.0.1";'
                    f" pacs.port: 104 → {pacs_port}")  # old → new
    assert url == ('vetmanager: settings changed: transfers.hl7_url: "" → "https://vm.example/hl7"'
                   " (at the next start: transfers.hl7_url)")

    assert gateway.stop() == 0
    gateway.start()
    with client(gateway, new_token(gateway, "later")) as api:
        shown = api.get("/api/v1/settings").json()
    assert shown["settings"]["transfers"]["hl7_url"] == "https://vm.example/hl7" and shown["restart_needed"] == []
    assert shown["settings"]["site"]["contact"]["phone"] == "08-555 12 34"


def test_changes_kept_in_the_journal_by_an_earlier_version_move_into_the_file(make_gateway: Any) -> None:
    gateway = make_gateway(site={"name": "Kliniken", "contact": CONTACT})
    assert gateway.stop() == 0
    with sqlite3.connect(gateway.data_dir / "journal.sqlite") as conn:  # as the earlier version left them
        conn.execute("INSERT INTO settings (key, value) VALUES ('site.contact', ?)",
                     (json.dumps(CONTACT | {"phone": "0611-1"}),))
        conn.execute("INSERT INTO settings (key, value) VALUES ('site.pacs', ?)",
                     (json.dumps({"host": "10.0.0.30", "port": 104, "ae_title": "OLD_PACS"}),))
    gateway.start()
    gateway.wait_for_log("remote settings moved out of the journal")
    with client(gateway, new_token(gateway, "vetmanager")) as api:
        form = api.get("/api/v1/site").json()
    assert (form["site"]["contact"]["phone"], form["pacs"]["ae_title"]) == ("0611-1", "OLD_PACS")
    with gateway.journal() as conn:
        left = conn.execute("SELECT key FROM settings WHERE key IN ('site.contact', 'site.pacs')").fetchall()
    assert left == []
    assert "0611-1" in vmgateway("site", "form", "--config", str(gateway.config)).stdout


def test_a_remote_file_with_a_key_it_may_not_hold_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "vmgateway.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "remote-settings.toml").write_text('[pacs]\nhost = "10.0.0.30"\n\n[upgrade]\n'
                                                            'start_command = ["sh", "-c", "id"]\n')
    refused = vmgateway("site", "form", "--config", str(config))
    assert refused.returncode == 2
    assert "may hold only" in refused.stderr and "not upgrade.start_command" in refused.stderr


@pytest.mark.peer
def test_who_may_connect_and_where_results_go_change_at_once(make_gateway: Any) -> None:
    from tests.support.gateway import dcmtk
    from tests.support.push import pushing_hl7, send
    from tests.support.upstream import Upstream

    with Upstream() as first, Upstream() as second:
        gateway, token = pushing_hl7(make_gateway, first.url, allow_plain_http=True)
        send(gateway, "BEFORE-1")
        first.wait_for(1)

        def echo(calling_ae: str) -> int:
            return dcmtk("echoscu", "-aet", calling_ae, "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port)).returncode

        assert echo("XRAY_ROOM1") == 0 and echo("SOMEONE") == 0  # anyone, to begin with
        with client(gateway, token) as api:
            answer = api.patch("/api/v1/settings", json={"changes": {
                "dicom.allowed_calling_aets": ["XRAY_ROOM1"], "transfers.hl7_url": second.url}})
        assert answer.status_code == 200 and answer.json()["restart_needed"] == [], answer.text
        assert echo("XRAY_ROOM1") == 0 and echo("SOMEONE") != 0  # refused from the next association on
        send(gateway, "AFTER-1")
        [moved] = second.wait_for(1)
        assert b"AFTER-1" in moved.body and len(first.received) == 1
