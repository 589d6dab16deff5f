"""HL7 messages POSTed raw over HTTPS, one per request, with their metadata in headers.

Header values are percent-encoded UTF-8 (HTTP headers are not a place for Å), the body is the
message exactly as received. `Idempotency-Key` is `<gateway id>:<item id>`: the same on every
resend of the item, different on every box, so the receiver can drop duplicates.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from vmgateway.hl7.charsets import hl7_content_type
from vmgateway.store import Store
from vmgateway.store import feed as feed_reads
from vmgateway.store.deliveries import Due
from vmgateway.transfers.outcome import Outcome, describe_failure, http_problem, is_transient, retry_after

_HEADER_FIELDS = {
    "X-Vmgateway-Sending-Application": "sending_application",
    "X-Vmgateway-Sending-Facility": "sending_facility",
    "X-Vmgateway-Message-Type": "message_type",
    "X-Vmgateway-Message-Control-Id": "control_id",
    "X-Vmgateway-Patient-Id": "patient_id",
}


class Hl7Sink:
    name = "hl7"
    kind = "hl7"
    max_items = 1
    max_bytes = 2**31

    def __init__(self, url: str, http: httpx.AsyncClient, store: Store, gateway_id: str) -> None:
        self.url = url
        self.http = http
        self.store = store
        self.gateway_id = gateway_id

    async def send(self, batch: list[Due]) -> Outcome:
        (due,) = batch
        payload, headers = await asyncio.to_thread(self._message, due)
        try:
            response = await self.http.post(self.url, content=payload, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(unreachable=describe_failure(exc))
        if response.is_success:
            return Outcome(delivered=[due.item_id])
        if is_transient(response.status_code):
            return Outcome(unreachable=http_problem(response), retry_after_s=retry_after(response))
        return Outcome(refused=[(due.item_id, http_problem(response))])

    def _message(self, due: Due) -> tuple[bytes, dict[str, str]]:
        with self.store.reading() as conn:
            found = feed_reads.item(conn, due.item_id)
        assert found is not None
        hl7 = found[0]["hl7"]
        headers = {
            "Content-Type": hl7_content_type(hl7["charset_used"], hl7["charset"]),
            "Idempotency-Key": f"{self.gateway_id}:{due.item_id}",
            "X-Vmgateway-Gateway-Id": self.gateway_id,
            "X-Vmgateway-Item-Id": str(due.item_id),
            "X-Vmgateway-Received-At": datetime.fromtimestamp(due.received_at, UTC).isoformat(),
            "X-Vmgateway-Sha256": due.sha256,
        }
        for header, key in _HEADER_FIELDS.items():
            if hl7.get(key):
                headers[header] = quote(str(hl7[key]), safe=" ^&~!$'()*+,;=:@/?")
        return self.store.payload(due.item_id), headers
