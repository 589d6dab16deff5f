"""systemd-networkd files for the router option on the form.

Static addresses only: the box's addresses are set at provisioning and Vetmanager's firewall
rules depend on them, so DHCP must not move them. A port the option does not use is kept down,
so that nobody plugs it into something and gets an address by surprise.
"""

from __future__ import annotations

from vmgateway.config import SiteConfig
from vmgateway.site.form import ROUTER_OPTIONS, uses_lan_port, uses_wan_port

WAN_FILE = "10-vmgateway-wan.network"
LAN_FILE = "20-vmgateway-lan.network"


def _network(interface: str, role: str, address: str, prefix: int, site: SiteConfig, routed: bool) -> str:
    lines = [
        f"# The gateway's {role} port, router option {site.router_option} ({ROUTER_OPTIONS[site.router_option]}),",
        "# rendered by `vmgateway host render`.",
        "[Match]", f"Name={interface}", "",
        "[Link]", "RequiredForOnline=yes", "",
        "[Network]", f"Address={address}/{prefix}", "DHCP=no", "IPv6AcceptRA=no", "LinkLocalAddressing=no",
    ]
    if routed:
        lines.append(f"Gateway={site.router_ip}")
        lines += [f"DNS={server}" for server in (site.dns or [site.router_ip])]
    return "\n".join(lines) + "\n"


def _unused(interface: str, site: SiteConfig) -> str:
    return (f"# Not used with router option {site.router_option} ({ROUTER_OPTIONS[site.router_option]}): kept down.\n"
            f"[Match]\nName={interface}\n\n[Link]\nActivationPolicy=down\nRequiredForOnline=no\n\n"
            "[Network]\nDHCP=no\nIPv6AcceptRA=no\nLinkLocalAddressing=no\n")


def network_files(site: SiteConfig) -> dict[str, str]:
    """File name → content, for /etc/systemd/network (the form must be complete: form_problems)."""
    assert site.lan_network is not None
    files = {}
    if uses_wan_port(site):
        assert site.wan_network is not None
        files[WAN_FILE] = _network(site.wan_interface, "WAN", site.external_ip, site.wan_network.prefixlen, site,
                                   routed=True)
    else:
        files[WAN_FILE] = _unused(site.wan_interface, site)
    if uses_lan_port(site):
        files[LAN_FILE] = _network(site.lan_interface, "LAN", site.internal_ip, site.lan_network.prefixlen, site,
                                   routed=not uses_wan_port(site))
    else:
        files[LAN_FILE] = _unused(site.lan_interface, site)
    return files
