"""Counters the receivers keep of their answers (what the journal cannot know: refusals).

prometheus-client's default registry; the API's /metrics serves them beside the journal's
figures and the process's own (memory, CPU, open files).
"""

from prometheus_client import Counter

DICOM_STORE_RESPONSES = Counter(
    "vmgateway_dicom_store_responses", "C-STORE responses sent, by status", ["status"]
)
HL7_ACKS = Counter("vmgateway_hl7_acks", "HL7 acknowledgements sent, by MSA-1 code", ["code"])
DELIVERIES = Counter(
    "vmgateway_deliveries", "Items pushed upstream, by destination and outcome (delivered, refused, dead)",
    ["destination", "outcome"],
)
UPSTREAM_FAILURES = Counter(
    "vmgateway_upstream_failures", "Requests upstream that failed as a whole (unreachable, 5xx, 429, …)",
    ["destination"],
)
