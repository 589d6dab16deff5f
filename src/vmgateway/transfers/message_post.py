"""HL7 and ASTM messages POSTed raw over HTTPS, one per request, with their metadata in headers.

Header values are percent-encoded UTF-8 (HTTP headers are not a place for Å), the body is the
message exactly as received. `Idempotency-Key` is `<gateway id>:<item id>`: the same on every
resend of the item, different on every box, so the receiver can drop duplicates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from vmgateway.astm.records import ASTM_MEDIA_TYPE
from vmgateway.charsets import hl7_content_type
from vmgateway.model import ItemKind
from vmgateway.records import Due
from vmgateway.store import Store
from vmgateway.transfers.outcome import Outcome, describe_failure, http_problem, is_transient, retry_after

HEADER_FIELDS = {
    "hl7": {
        "X-Vmgateway-Sending-Application": "sending_application",
        "X-Vmgateway-Sending-Facility": "sending_facility",
        "X-Vmgateway-Message-Type": "message_type",
        "X-Vmgateway-Message-Control-Id": "control_id",
        "X-Vmgateway-Patient-Id": "patient_id",
    },
    "astm": {
        "X-Vmgateway-Listener": "listener",
        "X-Vmgateway-Instrument": "instrument",
        "X-Vmgateway-Sample-Ids": "sample_ids",
        "X-Vmgateway-Patient-Ids": "patient_ids",
        "X-Vmgateway-Test-Codes": "test_codes",
    },
}
"""Per kind of message: header → the item's metadata field."""


class MessageSink:
    max_items = 1
    max_bytes = 2**31

    def __init__(self, kind: ItemKind, url: str, http: httpx.AsyncClient, store: Store, gateway_id: str) -> None:
        self.kind = kind
        self.name: str = kind
        self.url = url
        self.http = http
        self.store = store
        self.gateway_id = gateway_id

    def retarget(self, url: str) -> None:
        self.url = url

    async def send(self, batch: list[Due]) -> Outcome:
        (due,) = batch
        payload, headers = await self._message(due)
        try:
            response = await self.http.post(self.url, content=payload, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(unreachable=describe_failure(exc))
        if response.is_success:
            return Outcome(delivered=[due.item_id])
        if is_transient(response.status_code):
            return Outcome(unreachable=http_problem(response), retry_after_s=retry_after(response))
        return Outcome(refused=[(due.item_id, http_problem(response))])

    async def _message(self, due: Due) -> tuple[bytes, dict[str, str]]:
        payload = await self.store.feed.payload(due.item_id)
        fields = due.hl7 if self.kind == "hl7" else due.astm
        content_type = hl7_content_type(due.hl7.charset_used, due.hl7.charset) if due.hl7 else ASTM_MEDIA_TYPE
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": f"{self.gateway_id}:{due.item_id}",
            "X-Vmgateway-Gateway-Id": self.gateway_id,
            "X-Vmgateway-Item-Id": str(due.item_id),
            "X-Vmgateway-Received-At": datetime.fromtimestamp(due.received_at, UTC).isoformat(),
            "X-Vmgateway-Sha256": due.sha256,
        }
        for header, key in HEADER_FIELDS[self.kind].items():
            value = getattr(fields, key, None)
            if value:
                headers[header] = quote(str(value), safe=" ^&~!$'()*+,;=:@/?")
        return payload, headers
