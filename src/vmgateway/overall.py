"""The gateway's one overall state, decided here and nowhere else: the status page, /api/v1/status
and the metrics show what `assess` says.

A box once said "All well" with transfers off and ten items waiting, and "ok" for a destination
whose items were all dead. So the state is judged from facts, not from the listeners alone:

- *commissioning* until Vetmanager first activates transfers: items waiting is normal then, and
  the state says what is left to do rather than raising an alarm;
- *attention* when something will keep data from reaching Vetmanager or the box from running
  well — each reason named, with what to do;
- *all well* otherwise.

A problem that is over is not a reason: only the current facts count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from vmgateway.when import duration

State = Literal["commissioning", "all_well", "attention"]
STATES: tuple[State, ...] = ("commissioning", "all_well", "attention")
REASON_CODES = ("transfers_off", "dead_items", "destination", "waiting_too_long", "power", "disk", "clock",
                "component")
"""Every Reason.code, stable for programs (the metrics label them)."""


@dataclass(frozen=True)
class Facts:
    """What the judgement needs, gathered by whoever shows it."""

    commissioned: bool
    """Transfers were activated at least once."""
    transfers_active: bool
    waiting: int
    dead: int
    oldest_waiting_s: float | None
    max_wait_s: float
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Push destinations by name: their `state` ("ok", "paused"), last error and last delivery."""
    power: str | None = None
    """The UPS's state ("online", "on_battery", …); None when no UPS is watched."""
    disk_low: bool = False
    clock_synchronised: bool | None = None
    """None when the kernel cannot say."""
    failing: list[str] = field(default_factory=list)
    """Components (listeners, background jobs, the PACS poller) that are failing now."""


@dataclass(frozen=True)
class Reason:
    code: str
    """One of REASON_CODES."""
    text: str
    advice: str


@dataclass(frozen=True)
class Overall:
    state: State
    reasons: list[Reason]
    to_do: list[str]
    """While commissioning: what is left to do."""

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": [asdict(r) for r in self.reasons], "to_do": self.to_do}


def assess(facts: Facts) -> Overall:
    reasons = _box_reasons(facts)
    if not facts.commissioned:
        waiting = f"; {facts.waiting} item(s) wait for it, as they should" if facts.waiting else ""
        to_do = [f"Vetmanager activates transfers once the clinic's devices are connected{waiting}"]
        return Overall("attention" if reasons else "commissioning", reasons, to_do)
    reasons = _transfer_reasons(facts) + reasons
    return Overall("attention" if reasons else "all_well", reasons, [])


def _transfer_reasons(facts: Facts) -> list[Reason]:
    reasons = []
    age = f", the oldest for {duration(facts.oldest_waiting_s)}" if facts.oldest_waiting_s is not None else ""
    if not facts.transfers_active and facts.waiting:
        reasons.append(Reason("transfers_off", f"transfers are off while {facts.waiting} item(s) wait{age}",
                              "activate transfers again (the page's button, or POST /api/v1/transfers/activate)"))
    elif (facts.transfers_active and facts.oldest_waiting_s is not None
          and facts.oldest_waiting_s > facts.max_wait_s):
        reasons.append(Reason("waiting_too_long", f"{facts.waiting} item(s) waiting{age}",
                              "is Vetmanager fetching them (pull), or is the destination answering (push)?"))
    if facts.dead:
        reasons.append(Reason("dead_items", f"{facts.dead} item(s) dead: given up on",
                              "read why in the list of dead items; once the cause is fixed, retry them"))
    for name, destination in sorted(facts.destinations.items()):
        if destination.get("state") == "paused" or _failing_since_delivery(destination):
            error = destination.get("last_error") or "no answer"
            reasons.append(Reason("destination", f"destination {name} is {destination.get('state')}: {error}",
                                  "check the destination's URL and credentials in [transfers], and that it is up"))
    return reasons


def _failing_since_delivery(destination: dict[str, Any]) -> bool:
    error_at, delivered_at = destination.get("last_error_at"), destination.get("last_delivered_at")
    return error_at is not None and (delivered_at is None or error_at > delivered_at)


def _box_reasons(facts: Facts) -> list[Reason]:
    reasons = []
    if facts.power not in (None, "online", "disabled"):
        reasons.append(Reason("power", f"the UPS is {str(facts.power).replace('_', ' ')}",
                              "restore mains power; on battery the gateway drains and the box shuts down"))
    if facts.disk_low:
        reasons.append(Reason("disk", "the data disk is below storage.min_free_mb: nothing new is accepted",
                              "let Vetmanager take what is waiting, or free space on the box"))
    if facts.clock_synchronised is False:
        reasons.append(Reason("clock", "the clock is not synchronised (NTP)",
                              "may the box reach an NTP server? (systemd-timesyncd, the router)"))
    for name in facts.failing:
        reasons.append(Reason("component", f"{name} is failing",
                              "its last error is in the component's row; `vmgateway doctor` on the box"))
    return reasons
