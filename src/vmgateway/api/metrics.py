"""Prometheus metrics: most computed from the journal at scrape time.

The journal already knows what was received and delivered, so a collector reads it (a few
indexed aggregates) when Prometheus asks. Only what the journal cannot know — answers that
refused something — is counted by the receivers (vmgateway.counters).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _JournalCollector(Collector):
    def __init__(self, conn: sqlite3.Connection, data_dir: Path, components: dict[str, dict[str, Any]],
                 power: dict[str, Any]) -> None:
        self.conn = conn
        self.data_dir = data_dir
        self.components = components
        self.power = power

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily("vmgateway_received_items", "Items received and kept", labels=["kind"])
        received_bytes = CounterMetricFamily("vmgateway_received_bytes", "Bytes received and kept", labels=["kind"])
        totals = self.conn.execute("SELECT kind, count(*), coalesce(sum(size), 0) FROM items GROUP BY kind")
        for kind, count, size in totals:
            received.add_metric([kind], count)
            received_bytes.add_metric([kind], size)
        yield received
        yield received_bytes
        queue = GaugeMetricFamily("vmgateway_items", "Items by state", labels=["state"])
        for state, count in self.conn.execute("SELECT state, count(*) FROM items GROUP BY state"):
            queue.add_metric([state], count)
        yield queue
        disk = shutil.disk_usage(self.data_dir)
        yield GaugeMetricFamily("vmgateway_disk_free_bytes", "Free space on the data file system", value=disk.free)
        up = GaugeMetricFamily("vmgateway_component_up", "1 when a component is running", labels=["component"])
        for name, component in self.components.items():
            up.add_metric([name], 1 if component.get("state") == "running" else 0)
        yield up
        yield from _power_metrics(self.power)


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


def metrics_text(conn: sqlite3.Connection, data_dir: Path, components: dict[str, dict[str, Any]],
                 power: dict[str, Any]) -> tuple[bytes, str]:
    """The journal's figures, the power state, the receivers' answer counters and the process's own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JournalCollector(conn, data_dir, components, power))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
