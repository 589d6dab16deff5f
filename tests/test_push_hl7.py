"""Pushing HL7 over HTTP(S): retries, refusals, independence of destinations, upstream TLS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.certificates import CertificateAuthority
from tests.support.clients import client
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import dcmtk, free_port
from tests.support.push import dead_count, delivered_count, journal_states, pushing_hl7, send, wait_delivered
from tests.support.upstream import Step, Upstream


def test_outages_are_retried_with_one_idempotency_key_and_retry_after_is_honoured(make_gateway: Any) -> None:
    script = [Step(drop=True), Step(500), Step(429, {"Retry-After": "2"}), Step(200, delay_s=3), Step(503)]
    with Upstream(script) as upstream:
        gateway, token = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, timeout_s=1)
        (message,) = send(gateway, "LAB-0001")
        wait_delivered(gateway, 1)
        requests = upstream.wait_for(6)
    assert [r.body for r in requests] == [message] * 6  # exactly the bytes received, each time
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    first = requests[0].headers
    with client(gateway, token) as api:  # labelled as the pull feed labels it
        feed = api.get(f"/api/v1/items/{first['X-Vmgateway-Item-Id']}/content")
    assert first["Content-Type"] == feed.headers["content-type"] and first["Content-Type"].startswith(
        "x-application/hl7-v2+er7; charset=")
    assert first["X-Vmgateway-Message-Control-Id"] == "LAB-0001"
    assert first["Idempotency-Key"] == f"{first['X-Vmgateway-Gateway-Id']}:{first['X-Vmgateway-Item-Id']}"
    assert requests[3].at - requests[2].at >= 2  # after the 429, not before its Retry-After
    assert journal_states(gateway) == {"delivered": 1}
    with gateway.journal() as conn:  # outages count against the destination, not the item
        assert conn.execute("SELECT attempts FROM items").fetchone()[0] == 0
    with client(gateway, token) as api:
        destination = api.get("/api/v1/transfers").json()["destinations"]["hl7"]
        metrics = api.get("/api/v1/metrics").text
    assert destination["last_delivered_at"] and destination["last_error"].startswith("HTTP 503")
    assert 'vmgateway_upstream_failures_total{destination="hl7"} 5.0' in metrics


def test_a_refused_message_dies_alone_and_comes_back_when_retried(make_gateway: Any) -> None:
    refused_first = [Step(400), Step(200), Step(400)]  # the 1st message twice refused, the 2nd accepted
    with Upstream(refused_first, default=Step(201)) as upstream:
        gateway, token = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, max_attempts=2,
                                     concurrency=1)
        send(gateway, "BAD-1", "GOOD-2")
        gateway.wait_until(lambda lines: dead_count(lines) == 1 and delivered_count(lines) == 1, "one dead, one in")
        assert journal_states(gateway) == {"dead": 1, "delivered": 1}
        with client(gateway, token) as api:
            (dead,) = api.get("/api/v1/transfers/dead").json()["items"]
            assert (dead["control_id"], dead["attempts"]) == ("BAD-1", 2)
            assert dead["last_error"] == "HTTP 400 Bad Request"
            assert api.post("/api/v1/transfers/retry", json={"item_ids": [dead["id"]]}).json() == {
                "retried": [dead["id"]]}
        wait_delivered(gateway, 2)
    assert journal_states(gateway) == {"delivered": 2}


@pytest.mark.peer
def test_a_dead_dicomweb_destination_does_not_hold_hl7_up(make_gateway: Any) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    with Upstream() as upstream:
        gateway, token = pushing_hl7(make_gateway, upstream.url, dicomweb_url=nowhere, allow_plain_http=True)
        files = copies_of_ct_small(gateway.data_dir.parent / "ct", 2)
        assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files).returncode == 0
        send(gateway, "WHILE-DICOM-WAITS")
        wait_delivered(gateway, 1)
        gateway.wait_until(lambda lines: any('"destination": "dicomweb"' in line and "upstream unavailable" in line
                                             for line in lines), "the DICOMweb outage noticed")
    assert journal_states(gateway) == {"received": 2, "delivered": 1}
    with client(gateway, token) as api:
        transfers = api.get("/api/v1/transfers").json()
    assert transfers["destinations"]["dicomweb"]["state"] == "paused"
    assert "ConnectError" in transfers["destinations"]["dicomweb"]["last_error"]
    dicom = transfers["queue"]["dicom"]
    assert (dicom["waiting"], dicom["dead"]) == (2, 0) and dicom["oldest_waiting_at"] <= time.time()
    assert transfers["destinations"]["dicomweb"]["kind"] == "dicom"


def test_upstream_tls_is_verified_pinned_and_mutual_and_secrets_stay_out_of_logs(make_gateway: Any,
                                                                                tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("vetmanager-upstream")
    gateway_cert = ca.issue("clinic-gateway", ip=None)
    secret = "s3cr3t-bearer-token-never-logged"
    (tmp_path / "token").write_text(secret + "\n")

    # No CA given: the system's CAs do not know ours, so nothing is sent and the reason is shown.
    with Upstream(tls=server) as upstream:
        gateway, token = pushing_hl7(make_gateway, upstream.url)
        send(gateway, "UNTRUSTED")
        gateway.wait_until(lambda lines: any("CERTIFICATE_VERIFY_FAILED" in line for line in lines),
                           "the certificate refused")
        assert upstream.received == []
        gateway.stop()

    # The CA bundle, a bearer token from a file and a client certificate the upstream requires.
    with Upstream(tls=server, client_ca=str(ca.cert)) as upstream:
        gateway, _ = pushing_hl7(make_gateway, upstream.url, ca_file=str(ca.cert), auth="bearer",
                                 token_file=str(tmp_path / "token"), client_cert=str(gateway_cert.cert),
                                 client_key=str(gateway_cert.key))
        send(gateway, "MUTUAL-TLS")
        (request,) = upstream.wait_for(1)
        wait_delivered(gateway, 1)
        assert request.headers["Authorization"] == f"Bearer {secret}"
        assert not any(secret in line for line in gateway.log_lines)
        gateway.stop()

    # A pinned certificate (the server's own), and basic authentication.
    (tmp_path / "password").write_text("hunter2")
    with Upstream(tls=server) as upstream:
        gateway, _ = pushing_hl7(make_gateway, upstream.url, pinned_cert=str(server.cert), auth="basic",
                                 username="clinic", password_file=str(tmp_path / "password"))
        send(gateway, "PINNED")
        (request,) = upstream.wait_for(1)
        wait_delivered(gateway, 1)
        assert request.headers["Authorization"] == "Basic Y2xpbmljOmh1bnRlcjI="  # clinic:hunter2
        gateway.stop()
