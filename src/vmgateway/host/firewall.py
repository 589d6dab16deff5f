"""The box's firewall, as an nftables ruleset in a table of its own.

Vetmanager's addresses reach SSH and the management API; the clinic's devices reach DICOM and
HL7; loopback and answers to the box's own connections pass; everything else is dropped. The
file replaces only its own table when loaded (add, delete, define: atomic in one transaction),
so it can be loaded again at any time and leaves other tables alone. Addresses are written out
literally — no names to resolve, no sets to fill in later — so the file says exactly what it does.
"""

from __future__ import annotations

from ipaddress import collapse_addresses, ip_address

from vmgateway.addresses import parse_address_set
from vmgateway.config import Settings

TABLE = "vmgateway"
SSH_PORT = 22
PING_RATE = "10/second"


def _literal(entry: str) -> str:
    """An address, network or range as nft writes it (a range stays a range, as people read it)."""
    networks = parse_address_set(entry)
    if "-" in entry:
        first, last = (part.strip() for part in entry.split("-", 1))
        return f"{ip_address(first)}-{ip_address(last)}"
    (network,) = networks
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def management_sources(settings: Settings) -> list[str]:
    """Who may use SSH and the API: api.allow (the seed's Vetmanager addresses by default)."""
    return [_literal(entry) for entry in settings.api.allow]


def device_sources(settings: Settings) -> list[str]:
    """Who may send DICOM and HL7: the LAN, further device networks, and the PACS (C-MOVE sends to us)."""
    entries = [str(n) for n in [settings.site.lan_network, *settings.site.device_networks] if n is not None]
    if settings.pacs.host:
        try:
            entries.append(str(ip_address(settings.pacs.host)))
        except ValueError:
            pass  # a PACS named by host name: it is on the LAN, or belongs in site.device_networks
    return [_literal(entry) for entry in entries]


def _version(literal: str) -> int:
    return ip_address(literal.split("-")[0].split("/")[0]).version


def _disjoint(sources: list[str]) -> list[str]:
    """nft refuses overlapping intervals in a set: drop what another entry covers (a PACS inside
    the LAN); should entries still overlap, write the collapsed networks instead. `sources` are
    of one IP version."""
    covered = {source: parse_address_set(source) for source in sources}
    kept: list[str] = []
    unique = list(dict.fromkeys(sources))
    for index, source in enumerate(unique):
        others = [n for other in kept + unique[index + 1:] for n in covered[other]]  # of two equal, the last stays
        if not all(any(n.subnet_of(o) for o in others) for n in covered[source]):  # type: ignore[arg-type]
            kept.append(source)
    networks = [n for source in kept for n in covered[source]]
    if any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1:]):
        return [_literal(str(n)) for n in collapse_addresses(networks)]  # type: ignore[type-var]
    return kept


def _from(sources: list[str], rest: str, rest_v6: str | None = None) -> list[str]:
    """One rule per IP version present, the addresses as an anonymous set; `rest_v6` where IPv6 differs."""
    lines = []
    for family, version, tail in (("ip", 4, rest), ("ip6", 6, rest_v6 or rest)):
        these = _disjoint([source for source in sources if _version(source) == version])
        if these:
            lines.append(f"{family} saddr {{ {', '.join(these)} }} {tail}")
    return lines


def ruleset(settings: Settings) -> str:
    management = management_sources(settings)
    devices = device_sources(settings)
    api = settings.api.port
    device_ports = ", ".join(str(port) for port in dict.fromkeys(
        [settings.dicom.port, settings.hl7.port, *(listener.port for listener in settings.astm.listeners)]))
    rules = [
        'iif "lo" accept',
        "ct state established,related accept",
        "ct state invalid drop",
        "# Vetmanager: SSH and the management API",
        *_from(management, f"tcp dport {{ {SSH_PORT}, {api} }} accept"),
        "# the clinic's modalities, PACS and instruments: DICOM, HL7 and ASTM",
        *_from(devices, f"tcp dport {{ {device_ports} }} accept"),
        "# ping, from the same people, a few a second (a technician's first check)",
        *_from(management + devices, f"icmp type echo-request limit rate {PING_RATE} accept",
               f"icmpv6 type echo-request limit rate {PING_RATE} accept"),
        "# IPv6 neighbour discovery on the link (without it IPv6 stops working there)",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept",
    ]
    body = "\n".join(f"\t\t{rule}" for rule in rules)
    site = settings.site.name or "unnamed site"
    return f"""\
#!/usr/sbin/nft -f
# The Vetmanager Gateway's firewall for {site}, rendered by `vmgateway host render`.
# Re-render rather than edit. Loading it replaces table inet {TABLE} and nothing else.

table inet {TABLE}
delete table inet {TABLE}

table inet {TABLE} {{
\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
{body}
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t}}
}}
"""
