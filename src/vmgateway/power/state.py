"""What a UPS's variables mean for the gateway.

NUT's `ups.status` is a list of flags (`OL`, `OB`, `LB`, `CHRG`, `DISCHRG`, `FSD`, …). The
gateway folds them into one of five states; only `low_battery` and `forced_shutdown` (and a
runtime under the configured minimum while on battery) are reasons to drain. `unknown` is
never one: a missing upsd must not stop a clinic's imaging.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PowerState(StrEnum):
    ONLINE = "online"
    ON_BATTERY = "on_battery"
    LOW_BATTERY = "low_battery"
    FORCED_SHUTDOWN = "forced_shutdown"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PowerReading:
    state: PowerState
    status: str = ""
    """`ups.status` as upsd gave it, e.g. `OB DISCHRG LB`."""
    charge_percent: float | None = None
    runtime_s: float | None = None
    input_voltage: float | None = None
    load_percent: float | None = None
    error: str = ""
    """Why the state is unknown."""

    def describe(self) -> str:
        """One line for events and logs."""
        if self.state is PowerState.UNKNOWN:
            return f"unknown: {self.error}"
        parts = [f"{self.state.value} ({self.status})"]
        if self.charge_percent is not None:
            parts.append(f"battery {self.charge_percent:g}%")
        if self.runtime_s is not None:
            parts.append(f"runtime {self.runtime_s:g} s")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value, "ups_status": self.status, "battery_charge_percent": self.charge_percent,
            "battery_runtime_s": self.runtime_s, "input_voltage": self.input_voltage,
            "load_percent": self.load_percent, "error": self.error,
        }


def _number(variables: dict[str, str], name: str) -> float | None:
    try:
        return float(variables[name])
    except (KeyError, ValueError):
        return None


def read_state(variables: dict[str, str]) -> PowerReading:
    """Fold upsd's variables into a reading."""
    status = variables.get("ups.status", "").strip()
    flags = set(status.split())
    if "FSD" in flags:
        state = PowerState.FORCED_SHUTDOWN
    elif "OB" in flags and "LB" in flags:
        state = PowerState.LOW_BATTERY
    elif "OB" in flags:
        state = PowerState.ON_BATTERY
    elif "OL" in flags:
        state = PowerState.ONLINE  # "OL LB" too: the battery is low but mains is back
    else:
        return PowerReading(PowerState.UNKNOWN, status, error=f"ups.status {status!r} says neither OL nor OB")
    return PowerReading(
        state, status,
        charge_percent=_number(variables, "battery.charge"),
        runtime_s=_number(variables, "battery.runtime"),
        input_voltage=_number(variables, "input.voltage"),
        load_percent=_number(variables, "ups.load"),
    )


def unknown(error: str) -> PowerReading:
    return PowerReading(PowerState.UNKNOWN, error=error)


def drain_reason(reading: PowerReading, min_runtime_s: float) -> str | None:
    """Why this reading means the gateway must drain now, or None."""
    if reading.state is PowerState.FORCED_SHUTDOWN:
        return "the UPS announced a forced shutdown (FSD)"
    if reading.state is PowerState.LOW_BATTERY:
        return "the UPS is on battery and the battery is low"
    if (reading.state is PowerState.ON_BATTERY and reading.runtime_s is not None
            and reading.runtime_s < min_runtime_s):
        return f"on battery with {reading.runtime_s:g} s of runtime left, under power.min_runtime_s = {min_runtime_s:g}"
    return None
