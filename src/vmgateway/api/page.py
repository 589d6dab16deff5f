"""The status page at `/`: one server-rendered HTML page, no JavaScript, no external assets.

A person at Vetmanager signs in with a token (kept in an HttpOnly, Secure, SameSite=Strict
cookie), sees at a glance whether the gateway is well, and can switch transfers and run an
echo. The page refreshes itself. HTML is built with f-strings and `html.escape`: one page
does not justify a template engine.
"""

import base64
import hashlib
import time
from html import escape
from typing import Any

from vmgateway.records import DeadItem, Item, SenderSeen
from vmgateway.when import duration, when

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f7f9;color:#1d2430}
h1{font-size:1.4rem;margin:0 0 1rem} h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
.state{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600}
.ok{background:#d8f3dc;color:#1b4332} .warn{background:#fff3bf;color:#7c5e00} .bad{background:#ffd6d6;color:#8a1c1c}
.neutral{background:#e3e8f0;color:#1d2430}
table{border-collapse:collapse;background:#fff} .wide{overflow-x:auto;max-width:100%} .wide table{min-width:40rem}
td,th{padding:.3rem .7rem;border-bottom:1px solid #e3e6ea;text-align:left}
form{display:inline-block;margin:.3rem .5rem .3rem 0} input{padding:.25rem} button{padding:.3rem .8rem}
.note{color:#5b6472;font-size:.9rem}
"""


STYLE_SOURCE = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'"
"""The page's one inline style as its Content-Security-Policy names it: nothing else may style or run."""

_FINE = {"running", "ok", "active", "online", "disabled", "off", "starting", "finished"}


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="15">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def sign_in(message: str = "") -> str:
    note = f'<p class="state bad">{escape(message)}</p>' if message else ""
    return _page("vmgateway – sign in", f"""
<h1>Vetmanager Gateway</h1>{note}
<form method="post" action="/signin">
<label>Token / Nyckel <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Sign in / Logga in</button></form>
<p class="note">A token is made on the box with <code>vmgateway token create NAME</code>.</p>""")


DEAD_SHOWN = 20
"""Dead items listed on the page (the API lists them all)."""


def _dead_items(dead: list[DeadItem], total: int) -> str:
    """Items given up on, each with why and a button to try again once the cause is fixed."""
    if not dead:
        return ""
    rows = "".join(
        f"<tr><td>{d.id}</td><td>{escape(d.kind)}</td><td>{when(d.received_at)}</td>"
        f"<td>{escape(d.sender or '–')}</td><td>{d.attempts}</td>"
        f"<td>{escape(d.last_error or '–')}</td>"
        f"<td><form method='post' action='/ui/transfers/retry'><input type='hidden' name='item_id' value='{d.id}'>"
        f"<button type='submit'>Retry / Försök igen</button></form></td></tr>"
        for d in dead)
    more = f"<p class='note'>{total - len(dead)} more: GET /api/v1/transfers/dead</p>" if total > len(dead) else ""
    return f"""<h2>Dead items / Uppgivna försändelser: {total}</h2>
<div class="wide"><table id="dead"><tr><th>Item</th><th>Kind</th><th>Received</th><th>Sender</th><th>Attempts</th>
<th>Last error / Senaste fel</th><th></th></tr>{rows}</table></div>{more}
<form method="post" action="/ui/transfers/retry">
<button type="submit">Retry all / Försök igen med alla</button></form>"""


def status_page(status: dict[str, Any], devices: list[SenderSeen], last_received: float | None,
                echo_result: str = "", dead: list[DeadItem] | None = None,
                newest: list[Item] | None = None) -> str:
    components = status["components"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td><span class='state {'ok' if c.get('state') in _FINE else 'warn'}'>"
        f"{escape(str(c.get('state')))}</span></td><td>{escape(_details(c))}</td></tr>"
        for name, c in components.items() if name != "transfers"  # transfers have their own table
    )
    device_rows = "".join(
        f"<tr><td>{escape(d.protocol.upper())}</td><td>{escape(d.name)}"
        f"{' <span class=note>(the gateway testing itself / gatewayens självtest)</span>' if d.gateway_test else ''}"
        f"</td><td>{escape(d.address)}</td>"
        f"<td>{when(d.first_seen_at)}</td><td>{when(d.last_seen_at)}</td><td>{d.items}</td></tr>"
        for d in devices
    ) or "<tr><td colspan='6'>No device has sent anything yet / Ingen enhet har skickat något än</td></tr>"
    active = status["transfers_active"]
    switch = ("deactivate", "Deactivate transfers / Stoppa överföringen") if active else (
        "activate", "Activate transfers / Starta överföringen")
    echo_note = f'<p class="note" id="echo-result">{escape(echo_result)}</p>' if echo_result else ""
    body = f"""
<h1>Vetmanager Gateway {escape(status['site'])}</h1>
{_overall(status["overall"])}
<p class="note">version {escape(status['version'])}, running for / i drift sedan {duration(status['uptime_s'])},
 last received / senast mottaget: {when(last_received)}</p>
<h2>Transfers / Överföring: <span id="transfers">{'on / på' if active else 'off / av'}</span></h2>
<form method="post" action="/ui/transfers/{switch[0]}"><button type="submit">{switch[1]}</button></form>
{_destinations(components["transfers"], active)}
{_dead_items(dead or [], components["transfers"]["dead"])}
{_newest_items(newest or [])}
{_instruments(status["lab"])}
<h2>Components / Komponenter</h2><div class="wide"><table id="components">{rows}</table></div>
<h2>Devices seen / Enheter som hörts av</h2>
<div class="wide"><table id="devices"><tr><th>Protocol</th><th>Name (AE / application^facility)</th><th>Address</th>
<th>First seen</th><th>Last seen</th><th>Items</th></tr>{device_rows}</table></div>
{_identity(status["identity"])}
<h2>Echo a PACS or modality / Testa anslutningen</h2>
<form method="post" action="/ui/echo"><input name="host" placeholder="host" required>
<input name="port" placeholder="port" size="6" required><input name="called_ae" placeholder="AE title" value="ANY-SCP">
<button type="submit">C-ECHO</button></form>{echo_note}
<form method="post" action="/signout"><button type="submit">Sign out / Logga ut</button></form>
"""
    return _page("vmgateway – status", body, refresh=not echo_result)


def _instruments(instruments: dict[str, dict[str, Any]]) -> str:
    """Each analyzer lab orders go to: reachable or not, what waits, what it refused, its last word."""
    if not instruments:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(i['host'])}:{i['port']}</td>"
        f"<td><span class='state {'warn' if i['state'] == 'unreachable' or i['failed'] or i['dead'] else 'ok'}'>"
        f"{escape(i['state'])}</span></td><td>{i['waiting']}</td><td>{i['failed']}</td><td>{i['dead']}</td>"
        f"<td>{escape(str(i['last_answer'] or '–'))} {when(i['last_answer_at'], '')}</td>"
        f"<td>{escape(str(i['last_error'] or '–'))}</td></tr>"
        for name, i in instruments.items())
    return f"""<h2>Lab orders out / Labbremisser</h2>
<div class="wide"><table id="instruments"><tr><th>Instrument</th><th>Address</th><th>State / Läge</th>
<th>Waiting / Väntar</th><th>Refused / Avvisade</th><th>Dead / Uppgivna</th><th>Last answer / Senaste svar</th>
<th>Last error / Senaste fel</th></tr>{rows}</table></div>"""


def _identity(identity: dict[str, Any]) -> str:
    """Which box this is and what runs on it: what Vetmanager's staff quote when they call about one."""
    releases = identity["releases"]
    rows = [("Gateway id", identity["gateway_id"] or "–"), ("Host / Värd", identity["hostname"]),
            ("Site / Klinik", identity["site"] or "–"), ("Version", identity["version"]),
            ("Started / Startad", when(identity["started_at"])),
            ("Release committed / Fastställd", releases["committed"] or "–"),
            ("Previous / Föregående", releases["previous"] or "–"),
            ("On trial / Provas", releases["on_trial"] or "–"),
            ("Failed / Misslyckade", ", ".join(releases["failed"]) or "–"),
            ("Last upgrade / Senaste uppgradering", when(releases["last_upgrade_at"])),
            ("Last rollback / Senaste återgång", when(releases["last_rollback_at"]))]
    cells = "".join(f"<tr><th>{label}</th><td>{escape(str(value))}</td></tr>" for label, value in rows)
    return f'<h2>This box / Den här enheten</h2><div class="wide"><table id="identity">{cells}</table></div>'


def _destinations(transfers: dict[str, Any], active: bool) -> str:
    """One row per way out: each push destination with the queue of the kind it carries; in pull
    mode the feed Vetmanager reads. A kind that waits with nowhere to go gets a row of its own."""
    queue: dict[str, dict[str, Any]] = transfers["queue"]
    empty = {"waiting": 0, "dead": 0, "oldest_waiting_at": None}
    rows = []
    if transfers["mode"] == "pull":
        waiting = sum(q["waiting"] for q in queue.values())
        oldest = min((q["oldest_waiting_at"] for q in queue.values() if q["oldest_waiting_at"]), default=None)
        state = "ok" if active else "off"
        rows.append(_destination_row("Vetmanager (pull feed / hämtas)", state, waiting, 0, oldest, None, None))
    for name, destination in transfers["destinations"].items():
        kind = queue.get(destination["kind"], empty)
        state = destination["state"] if active else "off"
        held = destination.get("large_items_held_until")
        note = f"large items wait until {when(held)} / stora poster väntar till {when(held)}" if held else None
        rows.append(_destination_row(name, state, kind["waiting"], kind["dead"], kind["oldest_waiting_at"],
                                     destination["last_delivered_at"], destination["last_error"] or note))
    carried = {d["kind"] for d in transfers["destinations"].values()}
    if transfers["mode"] == "push":
        rows += [_destination_row(f"{kind} (no destination / ingen mottagare)", "none", q["waiting"], q["dead"],
                                  q["oldest_waiting_at"], None, None)
                 for kind, q in queue.items() if kind not in carried and q["waiting"] + q["dead"]]
    return f"""<div class="wide"><table id="destinations"><tr><th>Destination / Mottagare</th><th>State / Läge</th>
<th>Waiting / Väntar</th><th>Dead / Uppgivna</th><th>Oldest waiting / Äldsta väntar</th>
<th>Last delivered / Senast levererat</th><th>Last error / Senaste fel</th></tr>{"".join(rows)}</table></div>"""


def _destination_row(name: str, state: str, waiting: int, dead: int, oldest: float | None,
                     delivered: float | None, error: str | None) -> str:
    style = "ok" if state == "ok" else "neutral" if state == "off" else "warn"
    age = f"{duration(max(0.0, time.time() - oldest))}" if oldest else "–"
    return (f"<tr><td>{escape(name)}</td><td><span class='state {style}'>{escape(state)}</span></td>"
            f"<td>{waiting}</td><td>{dead}</td><td>{age}</td><td>{when(delivered)}</td>"
            f"<td>{escape(error or '–')}</td></tr>")


NEWEST_SHOWN = 20
"""Items received listed on the page, newest first."""


def _newest_items(items: list[Item]) -> str:
    """What arrived last: a technician connecting a device sees its item appear, with the animal."""
    if not items:
        return ""
    rows = "".join(
        f"<tr><td>{when(i.received_at)}</td><td>{escape(i.kind)}</td><td>{escape(i.sender)}</td>"
        f"<td>{escape(_animal(i))}</td><td>{escape(i.state)}</td></tr>" for i in items)
    return f"""<h2>Last received / Senast mottaget</h2>
<div class="wide"><table id="newest"><tr><th>Received / Mottaget</th><th>Kind / Typ</th><th>Sender / Avsändare</th>
<th>Animal, owner / Djur, ägare</th><th>State / Läge</th></tr>{rows}</table></div>"""


def _animal(item: Item) -> str:
    """The patient as the item names it: DICOM and HL7 patient name (`^` between the parts),
    the species when DICOM carries it, ASTM's patient IDs; `–` when it names none."""
    details = item.dicom or item.hl7
    name = " ".join(part for part in str(details.patient_name or "").split("^") if part) if details else ""
    if item.astm:
        name = item.astm.patient_ids
    species = item.dicom.species if item.dicom else None
    return " ".join(filter(None, [name, f"({species})" if species else ""])) or "–"


_HEADLINES = {
    "commissioning": ("neutral", "Commissioning / Driftsättning"),
    "all_well": ("ok", "All well / Allt OK"),
    "attention": ("bad", "Needs attention / Kräver åtgärd"),
}


def _overall(overall: dict[str, Any]) -> str:
    """The overall state first (vmgateway.overall decides it), each reason with what to do."""
    style, headline = _HEADLINES[overall["state"]]
    items = [f"<li>{escape(r['text'])} <span class='note'>→ {escape(r['advice'])}</span></li>"
             for r in overall["reasons"]] + [f"<li>{escape(step)}</li>" for step in overall["to_do"]]
    listed = f"<ul id='reasons'>{''.join(items)}</ul>" if items else ""
    return f'<p><span class="state {style}" id="overall">{headline}</span></p>{listed}'


def _details(component: dict[str, Any]) -> str:
    """A component's figures as a person reads them: times as local times, durations in minutes and
    hours, percents, the queue per kind, nothing that is not there."""
    parts = []
    for key, value in component.items():
        if key == "state" or value is None or value == {} or value == []:
            continue
        if key == "last_problem":
            parts.append(f"last problem {when(value['at'])}: {value['message']}")
        elif key == "destinations":
            parts += [f"{name} {inner.get('state')}" + (f" ({inner['last_error']})" if inner.get("last_error") else "")
                      for name, inner in value.items()]
        elif key == "queue":
            parts += [f"{kind}: {counts['waiting']} waiting, {counts['dead']} dead" for kind, counts in value.items()]
        elif not isinstance(value, dict | list):
            parts.append(_figure(key, value))
    return ", ".join(parts)


def _figure(key: str, value: Any) -> str:
    name = key.removesuffix("_at").removesuffix("_s").removesuffix("_percent").replace("_", " ")
    if isinstance(value, bool):
        return f"{name} {'yes' if value else 'no'}"
    if key.endswith("_at") and isinstance(value, int | float):
        return f"{name} {when(value)}"
    if key.endswith("_s") and isinstance(value, int | float):
        return f"{name} {duration(value)}"
    if key.endswith("_percent") and isinstance(value, int | float):
        return f"{name} {value:g} %"
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
