"""Push transfers as the tests watch them: a gateway pushing HL7 to an upstream, counts from its
log and journal."""

from __future__ import annotations

import json
from typing import Any

from tests.support.clients import client, new_token
from tests.support.gateway import GatewayProcess
from tests.support.hl7_peer import HEMATOLOGY, Peer, frame, msa, with_control_id

FAST = {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}
"""Push retries quick enough for a test."""


def delivered_count(lines: list[str]) -> int:
    return sum(json.loads(line)["items"] for line in lines if '"msg": "delivered"' in line)


def dead_count(lines: list[str]) -> int:
    return sum(len(json.loads(line)["items"]) for line in lines if '"msg": "items dead' in line)


def wait_delivered(gateway: GatewayProcess, count: int, timeout: float = 120, after: int = 0) -> None:
    """Wait until the log (from line `after` on) tells of `count` items delivered."""
    gateway.wait_until(lambda lines: delivered_count(lines[after:]) >= count, f"{count} items delivered", timeout)


def journal_states(gateway: GatewayProcess) -> dict[str, int]:
    with gateway.journal() as conn:
        return {row[0]: row[1] for row in conn.execute("SELECT state, count(*) FROM items GROUP BY state")}


def pushing_hl7(make_gateway: Any, url: str, **transfers: Any) -> tuple[GatewayProcess, str]:
    gateway: GatewayProcess = make_gateway(transfers={"mode": "push", "hl7_url": url, **FAST} | transfers)
    token = new_token(gateway, "vetmanager")
    with client(gateway, token) as api:
        assert api.post("/api/v1/transfers/activate").status_code == 200
    return gateway, token


def send(gateway: GatewayProcess, *control_ids: str) -> list[bytes]:
    peer = Peer(gateway.hl7_port)
    sent = []
    try:
        for control_id in control_ids:
            message = with_control_id(HEMATOLOGY, control_id)
            peer.send(frame(message))
            assert msa(peer.ack())[1] == "AA"
            sent.append(message)
    finally:
        peer.close()
    return sent
