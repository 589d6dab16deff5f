"""Address sets as people write them: `213.212.63.52`, `192.168.1.0/24`, `62.20.41.162-62.20.41.166`."""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
    summarize_address_range,
)

Network = IPv4Network | IPv6Network


def parse_address_set(entry: str) -> list[Network]:
    """The networks an entry covers; ValueError names what is wrong."""
    text = entry.strip()
    if "-" in text:
        first, last = (ip_address(part.strip()) for part in text.split("-", 1))
        if first.version != last.version or int(first) > int(last):
            raise ValueError(f"{entry!r} is not a range from a lower to a higher address of one IP version")
        return list(summarize_address_range(first, last))
    return [ip_network(text, strict=False)]


def contains(networks: list[Network], address: str | IPv4Address | IPv6Address) -> bool:
    peer = ip_address(address) if isinstance(address, str) else address
    if isinstance(peer, IPv6Address) and peer.ipv4_mapped:
        peer = peer.ipv4_mapped
    return any(peer in network for network in networks)


def local_address(bind: str) -> str:
    """Where the box itself reaches a listener bound to `bind` (all interfaces: loopback)."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
