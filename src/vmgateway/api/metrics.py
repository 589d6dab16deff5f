"""Prometheus metrics: most computed from the journal at scrape time.

The journal already knows what was received and delivered, so the store counts it (a few
indexed aggregates) when Prometheus asks. Only what the journal cannot know — answers that
refused something — is counted by the receivers (vmgateway.counters).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from vmgateway.model import ITEM_KINDS
from vmgateway.overall import REASON_CODES, STATES
from vmgateway.records import ItemCounts

disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` series beside every counter only doubles what Prometheus stores


class _GatewayCollector(Collector):
    """Everything from one status (api/gateway.py gateway_status): the metrics say what the page says."""

    def __init__(self, counts: ItemCounts, status: dict[str, Any]) -> None:
        self.counts = counts
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status, components = self.status, self.status["components"]
        yield InfoMetricFamily("vmgateway_build", "The running release", value={"version": status["version"]})
        yield from _identity_metrics(status["identity"])
        overall = GaugeMetricFamily("vmgateway_overall_state", "1 for the gateway's overall state (as on its page)",
                                    labels=["state"])
        for state in STATES:
            overall.add_metric([state], 1 if status["overall"]["state"] == state else 0)
        yield overall
        reasons = GaugeMetricFamily("vmgateway_attention_reasons", "Reasons for attention now, by kind",
                                    labels=["reason"])
        for code in REASON_CODES:
            reasons.add_metric([code], sum(1 for r in status["overall"]["reasons"] if r["code"] == code))
        yield reasons
        received = CounterMetricFamily("vmgateway_received_items", "Items received and kept", labels=["kind"])
        received_bytes = CounterMetricFamily("vmgateway_received_bytes", "Bytes received and kept", labels=["kind"])
        for kind, totals in self.counts.by_kind.items():
            received.add_metric([kind], totals.items)
            received_bytes.add_metric([kind], totals.bytes)
        yield received
        yield received_bytes
        queue = GaugeMetricFamily("vmgateway_items", "Items by state", labels=["state"])
        for item_state, count in self.counts.by_state.items():
            queue.add_metric([item_state], count)
        yield queue
        yield from _transfer_metrics(status)
        yield from _lab_metrics(status["lab"])
        disk = components["disk"]
        yield GaugeMetricFamily("vmgateway_disk_free_bytes", "Free space on the data file system",
                                value=disk["free_mb"] * 2**20)
        if status["clock_synchronised"] is not None:
            yield GaugeMetricFamily("vmgateway_clock_synchronised", "1 when the kernel's clock is NTP-synchronised",
                                    value=1 if status["clock_synchronised"] else 0)
        if status["api_certificate_expires_at"] is not None:
            yield GaugeMetricFamily("vmgateway_api_certificate_expiry_timestamp_seconds",
                                    "When the API's TLS certificate ends", value=status["api_certificate_expires_at"])
        up = GaugeMetricFamily("vmgateway_component_up",
                               "1 when a component works (listeners, API, PACS poller, journal)", labels=["component"])
        for name in ("dicom", "hl7", "astm"):
            up.add_metric([name], 1 if components[name].get("state") == "running" else 0)
        up.add_metric(["api"], 1)  # it is answering this request
        up.add_metric(["pacs"], 0 if components["pacs"].get("state") == "failing" else 1)
        up.add_metric(["journal"], 0 if components["journal"]["state"] == "failing" else 1)
        yield up
        yield from _job_metrics({name.removeprefix("job:"): c for name, c in components.items()
                                 if name.startswith("job:")})
        yield from _power_metrics(components["power"])


def _identity_metrics(identity: dict[str, Any]) -> Iterator[Metric]:
    """Which box this is (to join on by gateway_id), and its releases: on trial, rolled back, upgraded."""
    yield InfoMetricFamily("vmgateway_gateway", "Which box this is", value={
        "gateway_id": identity["gateway_id"] or "", "hostname": identity["hostname"], "site": identity["site"]})
    releases = identity["releases"]
    yield GaugeMetricFamily("vmgateway_release_on_trial", "1 while a new release is on trial",
                            value=1 if releases["on_trial"] else 0)
    yield GaugeMetricFamily("vmgateway_failed_releases", "Releases that failed their trial and were rolled back",
                            value=len(releases["failed"]))
    for key, name, what in (("last_upgrade_at", "vmgateway_last_upgrade_timestamp_seconds", "last committed"),
                            ("last_rollback_at", "vmgateway_last_rollback_timestamp_seconds", "last rolled back")):
        if releases[key] is not None:
            yield GaugeMetricFamily(name, f"When a release was {what}", value=releases[key])


def _transfer_metrics(status: dict[str, Any]) -> Iterator[Metric]:
    """Whether transfers are on, the queue per kind, and each push destination."""
    transfers = status["components"]["transfers"]
    yield GaugeMetricFamily("vmgateway_transfers_active", "1 while Vetmanager has transfers switched on",
                            value=1 if status["transfers_active"] else 0)
    waiting = GaugeMetricFamily("vmgateway_waiting_items", "Items waiting to be delivered", labels=["kind"])
    dead = GaugeMetricFamily("vmgateway_dead_items", "Items given up on, waiting for a person", labels=["kind"])
    for kind in ITEM_KINDS:  # every kind, 0 included: an alert on a series that vanishes never clears
        queue = transfers["queue"].get(kind, {})
        waiting.add_metric([kind], queue.get("waiting", 0))
        dead.add_metric([kind], queue.get("dead", 0))
    yield waiting
    yield dead
    oldest = status["queue"]["oldest_waiting_at"]
    yield GaugeMetricFamily("vmgateway_oldest_waiting_seconds", "Age of the oldest item waiting (0: none)",
                            value=0 if oldest is None else max(0.0, time.time() - oldest))
    paused = GaugeMetricFamily("vmgateway_destination_paused", "1 while a push destination is paused",
                               labels=["destination"])
    delivered = GaugeMetricFamily("vmgateway_destination_last_delivery_timestamp_seconds",
                                  "When a push destination last took an item", labels=["destination"])
    for name, destination in transfers["destinations"].items():
        paused.add_metric([name], 1 if destination.get("state") == "paused" else 0)
        if destination.get("last_delivered_at") is not None:
            delivered.add_metric([name], destination["last_delivered_at"])
    yield paused
    yield delivered


def _lab_metrics(instruments: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Per lab instrument: its order messages by state (0 included), and whether it answers."""
    messages = GaugeMetricFamily("vmgateway_lab_messages", "Lab order messages not yet through, by state",
                                 labels=["instrument", "state"])
    reachable = GaugeMetricFamily("vmgateway_lab_instrument_reachable", "0 while the last send found no answer",
                                  labels=["instrument"])
    for name, instrument in instruments.items():
        for state in ("waiting", "failed", "dead"):
            messages.add_metric([name, state], instrument[state])
        reachable.add_metric([name], 0 if instrument["state"] == "unreachable" else 1)
    yield messages
    yield reachable


def _job_metrics(jobs: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Whether each background job is failing now, and how often it failed and was restarted."""
    # Not labelled `job`: Prometheus keeps that for the scrape job (ours would become exported_job).
    failing = GaugeMetricFamily("vmgateway_job_failing", "1 while a background job is failing",
                                labels=["background_job"])
    failures = CounterMetricFamily("vmgateway_job_failures", "Failed steps or runs of a background job",
                                   labels=["background_job"])
    restarts = CounterMetricFamily("vmgateway_job_restarts", "Restarts of a background job that died",
                                   labels=["background_job"])
    for name, job in jobs.items():
        failing.add_metric([name], 1 if job["state"] == "failing" else 0)
        failures.add_metric([name], job["failures"])
        restarts.add_metric([name], job["restarts"])
    yield failing
    yield failures
    yield restarts


_POWER_STATES = ("online", "on_battery", "low_battery", "forced_shutdown", "unknown", "disabled")
_POWER_VALUES = (
    ("battery_charge_percent", "vmgateway_ups_battery_charge_ratio", "UPS battery charge (0–1)", 0.01),
    ("battery_runtime_s", "vmgateway_ups_battery_runtime_seconds", "UPS runtime left on battery", 1),
    ("input_voltage", "vmgateway_ups_input_voltage_volts", "Mains voltage at the UPS", 1),
    ("load_percent", "vmgateway_ups_load_ratio", "UPS load (0–1)", 0.01),
)


def _power_metrics(power: dict[str, Any]) -> Iterator[Metric]:
    """One gauge per power state (1 for the current one, the usual enum pattern) and the UPS's figures."""
    state = GaugeMetricFamily("vmgateway_power_state", "1 for the power state the UPS reports", labels=["state"])
    for name in _POWER_STATES:
        state.add_metric([name], 1 if power.get("state") == name else 0)
    yield state
    for key, name, text, scale in _POWER_VALUES:
        if power.get(key) is not None:
            yield GaugeMetricFamily(name, text, value=power[key] * scale)


def metrics_text(counts: ItemCounts, status: dict[str, Any]) -> tuple[bytes, str]:
    """The gateway's status and the journal's figures, the receivers' answer counters and the
    process's own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_GatewayCollector(counts, status))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
