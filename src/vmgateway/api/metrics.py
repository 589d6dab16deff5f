"""Prometheus metrics: most computed from the journal at scrape time.

The journal already knows what was received and delivered, so the store counts it (a few
indexed aggregates) when Prometheus asks. Only what the journal cannot know — answers that
refused something — is counted by the receivers (vmgateway.counters).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _GatewayCollector(Collector):
    def __init__(self, counts: dict[str, Any], data_dir: Path, components: dict[str, dict[str, Any]],
                 jobs: dict[str, dict[str, Any]], power: dict[str, Any]) -> None:
        self.counts = counts
        self.data_dir = data_dir
        self.components = components
        self.jobs = jobs
        self.power = power

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily("vmgateway_received_items", "Items received and kept", labels=["kind"])
        received_bytes = CounterMetricFamily("vmgateway_received_bytes", "Bytes received and kept", labels=["kind"])
        for kind, totals in self.counts["by_kind"].items():
            received.add_metric([kind], totals["items"])
            received_bytes.add_metric([kind], totals["bytes"])
        yield received
        yield received_bytes
        queue = GaugeMetricFamily("vmgateway_items", "Items by state", labels=["state"])
        for state, count in self.counts["by_state"].items():
            queue.add_metric([state], count)
        yield queue
        disk = shutil.disk_usage(self.data_dir)
        yield GaugeMetricFamily("vmgateway_disk_free_bytes", "Free space on the data file system", value=disk.free)
        up = GaugeMetricFamily("vmgateway_component_up", "1 when a component is running", labels=["component"])
        for name, component in self.components.items():
            up.add_metric([name], 1 if component.get("state") == "running" else 0)
        yield up
        yield from _job_metrics(self.jobs)
        yield from _power_metrics(self.power)


def _job_metrics(jobs: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Whether each background job is failing now, and how often it failed and was restarted."""
    failing = GaugeMetricFamily("vmgateway_job_failing", "1 while a background job is failing", labels=["job"])
    failures = CounterMetricFamily("vmgateway_job_failures", "Failed steps or runs of a background job",
                                   labels=["job"])
    restarts = CounterMetricFamily("vmgateway_job_restarts", "Restarts of a background job that died",
                                   labels=["job"])
    for name, job in jobs.items():
        failing.add_metric([name], 1 if job["state"] == "failing" else 0)
        failures.add_metric([name], job["failures"])
        restarts.add_metric([name], job["restarts"])
    yield failing
    yield failures
    yield restarts


_POWER_STATES = ("online", "on_battery", "low_battery", "forced_shutdown", "unknown", "disabled")
_POWER_VALUES = (
    ("battery_charge_percent", "vmgateway_ups_battery_charge_percent", "UPS battery charge"),
    ("battery_runtime_s", "vmgateway_ups_battery_runtime_seconds", "UPS runtime left on battery"),
    ("input_voltage", "vmgateway_ups_input_voltage_volts", "Mains voltage at the UPS"),
    ("load_percent", "vmgateway_ups_load_percent", "UPS load"),
)


def _power_metrics(power: dict[str, Any]) -> Iterator[Metric]:
    """One gauge per power state (1 for the current one, the usual enum pattern) and the UPS's figures."""
    state = GaugeMetricFamily("vmgateway_power_state", "1 for the power state the UPS reports", labels=["state"])
    for name in _POWER_STATES:
        state.add_metric([name], 1 if power.get("state") == name else 0)
    yield state
    for key, name, text in _POWER_VALUES:
        if power.get(key) is not None:
            yield GaugeMetricFamily(name, text, value=power[key])


def metrics_text(counts: dict[str, Any], data_dir: Path, components: dict[str, dict[str, Any]],
                 jobs: dict[str, dict[str, Any]], power: dict[str, Any]) -> tuple[bytes, str]:
    """The journal's figures, the jobs, the power state, the receivers' answer counters and the
    process's own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_GatewayCollector(counts, data_dir, components, jobs, power))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
