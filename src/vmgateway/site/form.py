"""The clinic's form: is it complete and consistent, and how it reads on paper.

The form is the `[site]` section (plus `[pacs]` where the gateway polls one). The configuration
model checks each value on its own; this module checks the form as a whole, because which
addresses are needed depends on how the router is set up:

1. DMZ: the gateway's WAN port has `external_ip` on the DMZ (`wan_network`), its default route
   is the router there; devices reach it through the router.
2. WAN + LAN: `external_ip` on the WAN port (default route), `internal_ip` on the LAN port.
3. One-to-one NAT: only the LAN port, `internal_ip`; the router maps `external_ip` onto it.
4. Port forwarding: only the LAN port, `internal_ip`; the router forwards 22 and 3000 to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Literal

from vmgateway.config import Settings, SiteConfig

ROUTER_OPTIONS = {1: "DMZ", 2: "WAN + LAN", 3: "one-to-one NAT", 4: "port forwarding"}
Language = Literal["sv", "en"]


def uses_wan_port(site: SiteConfig) -> bool:
    return site.router_option in (1, 2)


def uses_lan_port(site: SiteConfig) -> bool:
    return site.router_option in (2, 3, 4)


def device_facing_ip(site: SiteConfig) -> str:
    """The address modalities, PACS and instruments send to: the LAN port's, or in a DMZ the WAN port's."""
    return site.internal_ip if uses_lan_port(site) else site.external_ip


def _inside(address: str, network: IPv4Network | IPv6Network | None) -> bool:
    return network is not None and bool(address) and ip_address(address) in network


def form_problems(settings: Settings, language: Language = "en") -> list[str]:
    """What is missing or contradictory in the form, each naming its key (in either language: the
    technician looks the key up, and `site init` asks again the questions whose keys are named);
    empty when it can be used."""
    site = settings.site
    problems: list[tuple[str, str]] = []

    def say(en: str, sv: str) -> None:
        problems.append((en, sv))

    for key, sv_name in (("name", "anläggningens namn"), ("external_ip", "den externa IP-adressen")):
        if not getattr(site, key):
            say(f"site.{key} is missing", f"site.{key} saknas ({sv_name})")
    if site.lan_network is None:
        say("site.lan_network is missing (the clinic's LAN, e.g. 192.168.1.0/24)",
            "site.lan_network saknas (klinikens LAN, t.ex. 192.168.1.0/24)")
    if not site.router_ip:
        say("site.router_ip is missing (the gateway's default route)",
            "site.router_ip saknas (routern som gatewayen går ut genom)")
    if not (site.contact.name and (site.contact.phone or site.contact.email)):
        say("site.contact needs a name and a phone number or e-mail address",
            "site.contact behöver ett namn och ett telefonnummer eller en e-postadress")
    option = site.router_option
    if site.one_to_one_nat != (option == 3):
        nat = str(site.one_to_one_nat).lower()
        say(f"site.one_to_one_nat = {nat} contradicts site.router_option = {option} ({ROUTER_OPTIONS[option]}):"
            " one-to-one NAT is option 3, and only option 3",
            f"site.one_to_one_nat = {nat} stämmer inte med site.router_option = {option}: en-till-en-NAT är"
            " alternativ 3, och bara alternativ 3")
    if uses_wan_port(site):
        if site.wan_network is None:
            say(f"site.wan_network is missing: option {option} puts external_ip on the WAN port",
                f"site.wan_network saknas: med alternativ {option} sitter external_ip på WAN-porten")
        elif site.external_ip and not _inside(site.external_ip, site.wan_network):
            say(f"site.external_ip {site.external_ip} is not in site.wan_network {site.wan_network}",
                f"site.external_ip {site.external_ip} ligger inte i site.wan_network {site.wan_network}")
        if site.router_ip and site.wan_network and not _inside(site.router_ip, site.wan_network):
            say(f"site.router_ip {site.router_ip} is not in site.wan_network {site.wan_network}"
                f" (option {option}: the default route is on the WAN side)",
                f"site.router_ip {site.router_ip} ligger inte i site.wan_network {site.wan_network}"
                f" (alternativ {option}: gatewayen går ut på WAN-sidan)")
    if uses_lan_port(site):
        if not site.internal_ip:
            say(f"site.internal_ip is missing: option {option} uses the LAN port",
                f"site.internal_ip saknas: alternativ {option} använder LAN-porten")
        elif site.lan_network and not _inside(site.internal_ip, site.lan_network):
            say(f"site.internal_ip {site.internal_ip} is not in site.lan_network {site.lan_network}",
                f"site.internal_ip {site.internal_ip} ligger inte i site.lan_network {site.lan_network}")
    if option in (3, 4) and site.router_ip and site.lan_network and not _inside(site.router_ip, site.lan_network):
        say(f"site.router_ip {site.router_ip} is not in site.lan_network {site.lan_network}"
            f" (option {option}: the default route is on the LAN)",
            f"site.router_ip {site.router_ip} ligger inte i site.lan_network {site.lan_network}"
            f" (alternativ {option}: gatewayen går ut via LAN)")
    if option in (3, 4) and site.wan_network is not None:
        say(f"site.wan_network is set but option {option} does not use the WAN port: leave it out",
            f"site.wan_network är angivet men alternativ {option} använder inte WAN-porten: ta bort det")
    if option == 1 and site.internal_ip:
        say("site.internal_ip is set but option 1 (DMZ) does not use the LAN port: leave it out",
            "site.internal_ip är angivet men alternativ 1 (DMZ) använder inte LAN-porten: ta bort det")
    if option == 2 and site.wan_interface == site.lan_interface:
        say("site.wan_interface and site.lan_interface must differ for option 2 (both ports used)",
            "site.wan_interface och site.lan_interface måste vara olika med alternativ 2 (båda portarna används)")
    if uses_lan_port(site) and site.external_ip and site.external_ip == site.internal_ip:
        say("site.external_ip and site.internal_ip are the same address",
            "site.external_ip och site.internal_ip är samma adress")
    if settings.pacs.poll and not settings.pacs.host:
        say("pacs.host is missing although pacs.poll = true", "pacs.host saknas fast pacs.poll = true")
    return [sv if language == "sv" else en for en, sv in problems]


@dataclass(frozen=True)
class _Labels:
    title: str
    site: str
    external_ip: str
    internal_ip: str
    one_to_one_nat: str
    router_option: str
    options: dict[int, str]
    lan_network: str
    wan_network: str
    netmask: str
    router_ip: str
    dns: str
    dns_router: str
    contact: str
    name: str
    phone: str
    email: str
    pacs: str
    pacs_ip: str
    pacs_port: str
    pacs_ae: str
    no_pacs: str
    yes: str
    no: str
    for_modalities: str
    for_instruments: str
    gateway_ip: str
    port: str
    ae_title: str
    for_astm: str
    astm_serial: str


LABELS: dict[Language, _Labels] = {
    "sv": _Labels(
        title="Vetmanager Gateway – uppgifter från kliniken", site="Anläggning", external_ip="Extern IP-adress",
        internal_ip="Intern IP-adress", one_to_one_nat="En-till-en-NAT", router_option="Routerkonfiguration",
        options={1: "Fast IP-adress i DMZ (rekommenderas)", 2: "Fast WAN-IP och fast LAN-IP (båda portarna)",
                 3: "En-till-en-NAT (LAN-porten)", 4: "Portvidarebefordran (LAN-porten)"},
        lan_network="LAN-nät", wan_network="WAN-/DMZ-nät", netmask="Nätmask", router_ip="Routerns IP-adress",
        dns="DNS-servrar", dns_router="routern", contact="Kontaktperson", name="Namn", phone="Telefon", email="E-post",
        pacs="PACS som gatewayen hämtar från", pacs_ip="IP-adress", pacs_port="Port", pacs_ae="AE-titel",
        no_pacs="Inget (PACS och modaliteter skickar till gatewayen)", yes="Ja", no="Nej",
        for_modalities="Inställningar för modaliteter och PACS (DICOM)",
        for_instruments="Inställningar för labbinstrument (HL7)", gateway_ip="Gatewayens IP-adress",
        port="Port", ae_title="AE-titel", for_astm="Inställningar för labbinstrument (ASTM)",
        astm_serial="seriell port"),
    "en": _Labels(
        title="Vetmanager Gateway – the clinic's details", site="Site", external_ip="External IP address",
        internal_ip="Internal IP address", one_to_one_nat="One-to-one NAT", router_option="Router set-up",
        options={1: "Fixed IP address on a DMZ (recommended)", 2: "Fixed WAN IP and fixed LAN IP (both ports)",
                 3: "One-to-one NAT (LAN port)", 4: "Port forwarding (LAN port)"},
        lan_network="LAN network", wan_network="WAN/DMZ network", netmask="Netmask", router_ip="Router IP address",
        dns="DNS servers", dns_router="the router", contact="Contact person", name="Name", phone="Phone",
        email="E-mail",
        pacs="PACS the gateway fetches from", pacs_ip="IP address", pacs_port="Port", pacs_ae="AE title",
        no_pacs="None (the PACS and modalities send to the gateway)", yes="Yes", no="No",
        for_modalities="Settings for modalities and the PACS (DICOM)",
        for_instruments="Settings for lab instruments (HL7)", gateway_ip="Gateway IP address",
        port="Port", ae_title="AE title", for_astm="Settings for lab instruments (ASTM)",
        astm_serial="serial port"),
}


def printed_form(settings: Settings, language: Language) -> str:
    """The filled-in form as the clinic sends it to Vetmanager, and what its devices are set to."""
    text = LABELS[language]
    site, pacs = settings.site, settings.pacs

    def line(label: str, value: object, indent: int = 0) -> str:
        return f"{' ' * indent}{label + ':':<{34 - indent}} {value if value not in ('', None) else '–'}"

    lines = [text.title, "=" * len(text.title), "",
             line(text.site, site.name),
             line(text.external_ip, site.external_ip),
             line(text.internal_ip, site.internal_ip),
             line(text.one_to_one_nat, text.yes if site.one_to_one_nat else text.no),
             line(text.router_option, f"{site.router_option} – {text.options[site.router_option]}"),
             line(text.lan_network, site.lan_network),
             line(text.netmask, site.lan_network.netmask if site.lan_network else ""),
             *([line(text.wan_network, site.wan_network),
                line(text.netmask, site.wan_network.netmask if site.wan_network else "")]
               if uses_wan_port(site) else []),
             line(text.router_ip, site.router_ip),
             line(text.dns, ", ".join(site.dns) or f"({text.dns_router})"),
             "", text.contact,
             line(text.name, site.contact.name, 2), line(text.phone, site.contact.phone, 2),
             line(text.email, site.contact.email, 2),
             "", text.pacs]
    if pacs.host:
        lines += [line(text.pacs_ip, pacs.host, 2), line(text.pacs_port, pacs.port, 2),
                  line(text.pacs_ae, pacs.ae_title, 2)]
    else:
        lines.append(f"  {text.no_pacs}")
    gateway_ip = device_facing_ip(site)
    lines += ["", text.for_modalities,
              line(text.gateway_ip, gateway_ip, 2), line(text.port, settings.dicom.port, 2),
              line(text.ae_title, settings.dicom.ae_title, 2),
              "", text.for_instruments,
              line(text.gateway_ip, gateway_ip, 2), line(text.port, settings.hl7.port, 2)]
    astm = settings.astm
    if astm.listeners or astm.serial:
        lines += ["", text.for_astm]
        lines += [line(listener.name, f"{gateway_ip}, {text.port.lower()} {listener.port}", 2)
                  for listener in astm.listeners]
        lines += [line(port.name, f"{text.astm_serial} {port.device}, {port.baudrate} baud", 2) for port in astm.serial]
    return "\n".join(lines + [""])
