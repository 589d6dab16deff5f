"""The gateway's settings: embedded defaults from the site form, overridden by a TOML file.

Every value is validated at start. A wrong file stops the gateway with a message that names
the key, the value and what is allowed, because a box that starts on a half-understood
configuration is worse than one that refuses to start. Unknown keys are errors for the same
reason: a misspelt key silently ignored is a setting the technician believes in but never got.
"""

from __future__ import annotations

import os
import re
import tomllib
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, model_validator

from vmgateway.addresses import local_address, parse_address_set
from vmgateway.charsets import (
    FIELD_TEXT_PATTERN,
    KNOWN,
    control_character,
    frames_safely,
    is_known,
    unfit_for_a_field,
)
from vmgateway.paths import BOX_CONFIG, TRUSTED_KEYS
from vmgateway.when import Window

ENV_CONFIG = "VMGATEWAY_CONFIG"


class ConfigError(Exception):
    """The configuration file cannot be used; the message says why, key by key."""


def _ae_title(value: str) -> str:
    """An AE title as DICOM defines it (PS3.5 6.2): 1–16 characters of the default
    repertoire, no backslash, no control characters, not only spaces."""
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError("an AE title needs 1 to 16 characters, not only spaces")
    if len(value) > 16:
        raise ValueError("an AE title has at most 16 characters")
    if any(c == "\\" or not (" " <= c <= "~") for c in value):
        raise ValueError("an AE title uses printable ASCII without backslash")
    return stripped


def _ip_address(allowed: str, empty_too: bool = False) -> AfterValidator:
    """A validator for IP address strings; `allowed` is what the refusal says is allowed."""

    def check(value: str) -> str:
        if empty_too and not value:
            return value
        try:
            ip_address(value)
        except ValueError:
            raise ValueError(allowed) from None
        return value

    return AfterValidator(check)


def _printable(value: str) -> str:
    """Text a person reads on the site form and in the doctor's report: no control characters (a
    remote party must not forge lines on the sheet a technician reads)."""
    bad = control_character(value)
    if bad is not None:
        raise ValueError(f"text without control characters ({bad} is one)")
    return value


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_host(value: str) -> bool:
    """An IP address, or a name as RFC 1123 allows (labels of letters, digits and hyphens)."""
    try:
        ip_address(value.strip("[]"))
        return True
    except ValueError:
        pass
    name = value.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _host(value: str) -> str:
    if value and not is_host(value):
        raise ValueError("a host: an IP address or a name such as pacs.clinic.local")
    return value


def _ae_title_or_none(value: str) -> str:
    return _ae_title(value) if value else value


AETitle = Annotated[str, AfterValidator(_ae_title)]
BindAddress = Annotated[str, _ip_address("a bind address is an IP address such as 0.0.0.0 (all) or 127.0.0.1")]
OptionalIP = Annotated[str, _ip_address("an IP address such as 192.0.2.10, or empty", empty_too=True)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactConfig(_Section):
    """The clinic's contact person (the site form)."""

    name: Annotated[str, Field(max_length=200), AfterValidator(_printable)] = ""
    phone: Annotated[str, Field(max_length=50, pattern=r"^[0-9+()\- ]*$")] = ""
    email: Annotated[str, Field(max_length=200, pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$"),
                     AfterValidator(_printable)] = ""


InterfaceName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""A Linux network interface name (at most 15 characters)."""


class SiteConfig(_Section):
    """The clinic's form: where the gateway stands and how it is connected.

    Everything may be empty while a box is being prepared; `vmgateway site init` and `host render`
    insist on a complete, consistent form (vmgateway.site.form.form_problems)."""

    name: Annotated[str, Field(max_length=200)] = ""
    external_ip: OptionalIP = ""
    """The address Vetmanager reaches the gateway at (on its WAN port for options 1 and 2)."""
    internal_ip: OptionalIP = ""
    """The gateway's address on the clinic's LAN (options 2, 3 and 4)."""
    one_to_one_nat: bool = False
    router_option: Annotated[int, Field(ge=1, le=4)] = 1
    """1 DMZ (recommended), 2 WAN + LAN, 3 one-to-one NAT, 4 port forwarding."""
    lan_network: IPvAnyNetwork | None = None
    """The clinic's LAN, where the modalities and instruments are, e.g. 192.168.1.0/24."""
    wan_network: IPvAnyNetwork | None = None
    """The network of external_ip on the WAN port (options 1 and 2): the DMZ or the WAN side."""
    router_ip: OptionalIP = ""
    """The router: the gateway's default route (on the WAN side for options 1 and 2, else on the LAN)."""
    dns: list[Annotated[str, _ip_address("an IP address such as 192.0.2.53")]] = []
    """Name servers; empty: the router."""
    device_networks: list[IPvAnyNetwork] = []
    """Further networks whose devices may send DICOM and HL7 (the LAN network always may)."""
    wan_interface: InterfaceName = "enp1s0"
    lan_interface: InterfaceName = "enp2s0"
    contact: ContactConfig = ContactConfig()


class PacsConfig(_Section):
    """The clinic's PACS, where the gateway polls one (empty host: none)."""

    host: Annotated[str, Field(max_length=253), AfterValidator(_host)] = ""
    port: Port = 104
    ae_title: Annotated[str, Field(max_length=16), AfterValidator(_ae_title_or_none)] = ""
    """The PACS's AE title, as DICOM allows one (PS3.5: 16 characters, no backslash or control characters)."""
    poll: bool = False
    """Ask the PACS for new studies every interval_s and fetch them (for a PACS that cannot forward)."""
    interval_s: Annotated[float, Field(ge=5, le=86400)] = 60
    retrieve: Literal["get", "move"] = "get"
    """C-GET needs nothing on the PACS; C-MOVE needs VM_GATEWAY (our address, port 4006) registered there."""
    lookback_days: Annotated[int, Field(ge=0, le=365)] = 2
    """Studies dated from this many days ago to today are looked at (overlapping polls: nothing missed at midnight)."""
    timeout_s: Seconds = 30
    """For each DICOM step with the PACS (association, each response)."""

    @model_validator(mode="after")
    def _polling_needs_a_pacs(self) -> PacsConfig:
        if self.poll and not (self.host and self.ae_title):
            raise ValueError("pacs.poll = true needs pacs.host and pacs.ae_title")
        return self


class StorageConfig(_Section):
    data_dir: Path = Path("./var")
    min_free_mb: Annotated[int, Field(ge=0)] = 1024
    """Below this much free space on the data file system, nothing more is accepted."""
    keep_delivered_days: Annotated[float, Field(ge=0, le=3650)] = 7
    """Delivered files are removed this long after delivery (the journal keeps their record)."""
    soft_min_free_mb: Annotated[int, Field(ge=0)] = 4096
    """Below this much free space, delivered files go sooner, oldest first; undelivered ones never."""


class DicomConfig(_Section):
    engine: Literal["asyncio", "pynetdicom"] = "asyncio"
    """What serves the port: the gateway's own acceptor in its event loop, or pynetdicom's
    threads (the engine up to 0.1.0, kept for one release as the way back)."""
    bind: BindAddress = "0.0.0.0"
    port: Port = 4006
    ae_title: AETitle = "VM_GATEWAY"
    require_called_ae: bool = True
    """Reject associations whose called AE title is not `ae_title`."""
    allowed_calling_aets: list[AETitle] = []
    """Calling AE titles allowed to connect; empty lets everyone in."""
    max_associations: Annotated[int, Field(ge=1, le=200)] = 10
    max_associations_per_peer: Annotated[int, Field(ge=1, le=200)] = 5
    """Connections one address may hold; more are closed at once, so one device cannot take them all."""
    max_pdu: Annotated[int, Field(ge=4096, le=2**24)] = 2**20
    """Largest PDU we announce and accept; a longer one aborts the association. Not 0 (unlimited):
    pynetdicom holds a whole PDU in memory. 1 MiB is as fast as unlimited (bench/README.md)."""
    acse_timeout_s: Seconds = 30
    dimse_timeout_s: Seconds = 60
    network_timeout_s: Seconds = 60
    stable_after_s: Seconds = 60
    """A study is complete once this long passes without a new instance for it."""
    drain_timeout_s: Seconds = 30
    """On stop, how long running associations may take to finish before they are aborted."""
    worklist_charset: Literal["ISO_IR 100", "ISO_IR 192"] = "ISO_IR 100"
    """Of worklist answers: Latin-1 (older modalities often know nothing else; it has Å, Ä, Ö) or UTF-8."""


def _charset(value: str) -> str:
    if not is_known(value):
        raise ValueError(f"an HL7 character set such as {', '.join(KNOWN[:4])} or UNICODE UTF-8")
    return value


class Hl7Config(_Section):
    bind: BindAddress = "0.0.0.0"
    port: Port = 2575
    max_message_bytes: Annotated[int, Field(ge=1024, le=2**30)] = 16 * 2**20
    """Larger frames are answered AR and the connection is closed (base64 PDFs make 16 MiB sensible)."""
    max_connections: Annotated[int, Field(ge=1, le=10000)] = 100
    max_connections_per_peer: Annotated[int, Field(ge=1, le=10000)] = 10
    """Connections one address may hold; more are closed at once, so one PC cannot lock out the instruments."""
    idle_timeout_s: Seconds = 600
    """A connection that sends nothing for this long is closed."""
    frame_timeout_s: Seconds = 120
    """A frame must arrive whole within this long of its start byte, or the connection is closed
    (a trickle would otherwise hold it open for good). 16 MiB on a 10 Mbit/s link takes 14 s."""
    allowed_peers: list[IPvAnyNetwork] = []
    """Addresses or networks allowed to connect (e.g. "192.168.1.0/24"); empty lets everyone in."""
    charset_overrides: dict[str, Annotated[str, AfterValidator(_charset)]] = {}
    """Per sending application (MSH-3): the charset its messages are really in, whatever MSH-18 says."""
    drain_timeout_s: Seconds = 10
    """On stop, how long a connection may take to finish the message it is sending."""


def _address_set(value: str) -> str:
    try:
        parse_address_set(value)
    except ValueError:
        raise ValueError("an IP address, a network (10.0.0.0/8) or a range (10.0.0.5-10.0.0.9)") from None
    return value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError("a file that exists")
    return value


AddressSet = Annotated[str, AfterValidator(_address_set)]
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
MANAGEMENT_ADDRESSES = ["213.212.63.52", "62.20.41.162-62.20.41.166"]
"""Vetmanager's server and office (the seed)."""


class ApiConfig(_Section):
    bind: BindAddress = "0.0.0.0"
    port: Port = 3000
    allow: list[AddressSet] = MANAGEMENT_ADDRESSES
    """Who may connect to the API; 127.0.0.1 and ::1 are always allowed. Anyone else's connection is
    closed at once, before TLS."""
    tls: bool = True
    """Plain HTTP only when this is set to false explicitly."""
    tls_cert: ExistingFile | None = None
    tls_key: ExistingFile | None = None
    """Without these, a self-signed certificate is made in the data folder at first start."""
    client_ca: ExistingFile | None = None
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=2**24)] = 65536
    max_connections: Annotated[int, Field(ge=1, le=10000)] = 128
    """Open API connections at most; more are closed when accepted."""
    max_connections_per_peer: Annotated[int, Field(ge=1, le=10000)] = 32
    """Open API connections one address may hold (a browser opens about 6)."""
    head_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10
    """A request's line and headers must arrive within this long, or the connection is cut."""
    failed_auth_limit: Annotated[int, Field(ge=1, le=1000)] = 10
    """Failed token checks per address and minute before it is answered 429."""

    def local_url(self, path: str) -> str:
        """`path` of this API as the box itself reaches it (doctor, upgrade, pacs poll-now)."""
        return f"{'https' if self.tls else 'http'}://{local_address(self.bind)}:{self.port}{path}"


class PowerConfig(_Section):
    """The UPS, as NUT's upsd on the box reports it."""

    enabled: bool = True
    nut_host: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    nut_port: Port = 3493
    ups: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "ups"
    """The UPS's name in NUT's ups.conf."""
    user: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")] = ""
    password_file: ExistingFile | None = None
    """A file holding the password of `user` (a secret does not belong in the configuration)."""
    poll_interval_s: Annotated[float, Field(ge=0.2, le=60)] = 2
    min_runtime_s: Annotated[float, Field(ge=0, le=86400)] = 90
    """On battery with less runtime than this left, drain (0: only on the UPS's own low-battery signal)."""
    drain_timeout_s: Seconds = 15
    """When the power fails, how long running transfers may take to finish (upsmon's shutdown follows)."""
    shutdown_command: list[Annotated[str, Field(min_length=1)]] = []
    """Run after a power drain, e.g. ["systemctl", "poweroff"]. Empty: NUT's upsmon owns the host shutdown."""

    def password(self) -> str:
        return self.password_file.read_text().strip() if self.password_file else ""


def _upstream_url(value: str) -> str:
    """A URL as the push sink will use it: https (or http, allowed separately), a host, a port
    1–65535, no user or password in it (transfers.auth says how to authenticate), nothing but
    printable characters. `https://`, `https://[::1` or port 99999 once passed and the destination
    paused for good, with tracebacks."""
    if not value:
        return value
    if not value.startswith(("https://", "http://")):
        raise ValueError("an https:// URL (http:// only with allow_plain_http = true), or empty")
    if any(c.isspace() for c in value) or control_character(value):
        raise ValueError("a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"a URL that can be read ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("a URL without a user or password in it (transfers.auth and token_file say how to sign in)")
    if not parts.hostname or not is_host(parts.hostname):
        raise ValueError("a URL with a host: an IP address or a name")
    if port == 0:
        raise ValueError("a URL whose port is 1 to 65535")
    return value.rstrip("/")


UpstreamUrl = Annotated[str, Field(max_length=2000), AfterValidator(_upstream_url)]


def _window(text: str) -> str:
    if text:
        Window.parse(text)  # its ValueError says what is allowed
    return text


class TransfersConfig(_Section):
    """Push transfers to Vetmanager (mode = "push"); "pull" leaves them to the feed."""

    mode: Literal["pull", "push"] = "pull"
    dicomweb_url: UpstreamUrl = ""
    """DICOMweb root; instances are POSTed to {dicomweb_url}/studies (STOW-RS)."""
    hl7_url: UpstreamUrl = ""
    """HL7 messages are POSTed here, raw."""
    astm_url: UpstreamUrl = ""
    """ASTM messages are POSTed here, raw."""
    allow_plain_http: bool = False
    """http:// URLs are refused unless this is set (a test archive on the same host, say)."""
    ca_file: ExistingFile | None = None
    """CA bundle to verify the upstream with (default: the system's)."""
    pinned_cert: ExistingFile | None = None
    """The upstream's own certificate (PEM): trusted alone, whoever signed it."""
    client_cert: ExistingFile | None = None
    client_key: ExistingFile | None = None
    auth: Literal["none", "bearer", "basic"] = "none"
    token_file: ExistingFile | None = None
    """The bearer token, in a file (a secret does not belong in the configuration)."""
    username: Annotated[str, Field(max_length=200)] = ""
    password_file: ExistingFile | None = None
    concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    """Requests in flight per destination."""
    batch_max_instances: Annotated[int, Field(ge=1, le=1000)] = 50
    batch_max_mb: Annotated[int, Field(ge=1, le=4096)] = 64
    timeout_s: Seconds = 120
    """Connect, read and write timeout of one request (a large batch on a slow line needs time)."""
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 5
    """An item refused this many times (4xx, a STOW failure for it) is dead: kept, shown, retryable."""
    max_age_h: Annotated[float, Field(gt=0, le=24 * 365)] = 168
    """An item not delivered this long after receipt (the upstream down all the while) is dead."""
    backoff_initial_s: Annotated[float, Field(gt=0, le=3600)] = 2
    backoff_max_s: Annotated[float, Field(gt=0, le=86400)] = 600
    max_wait_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 1800
    """An item still waiting this long after receipt, while transfers are on, needs attention."""
    max_upload_kbit_s: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """DICOM uploads no faster than this (0: as fast as the line goes); set it below the clinic's
    uplink so that lab results, never paced, get through beside a large upload."""
    large_item_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 50
    """Items larger than this wait for large_items_window (when one is set)."""
    large_items_window: Annotated[str, AfterValidator(_window)] = ""
    """Local time when large items are pushed, e.g. "18:00-07:00"; empty: any time."""

    @model_validator(mode="after")
    def _consistent(self) -> TransfersConfig:
        problems = []
        for key in ("dicomweb_url", "hl7_url", "astm_url"):
            if getattr(self, key).startswith("http://") and not self.allow_plain_http:
                problems.append(f"transfers.{key} is plain http://: use https:// or set allow_plain_http = true")
        if self.mode == "push" and not (self.dicomweb_url or self.hl7_url or self.astm_url):
            problems.append('transfers.mode = "push" needs dicomweb_url, hl7_url or astm_url')
        if (self.client_cert is None) != (self.client_key is None):
            problems.append("transfers.client_cert and transfers.client_key go together")
        if self.auth == "bearer" and self.token_file is None:
            problems.append('transfers.auth = "bearer" needs token_file')
        if self.auth == "basic" and not (self.username and self.password_file):
            problems.append('transfers.auth = "basic" needs username and password_file')
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AstmListener(_Section):
    """One TCP port for ASTM E1381/E1394 instruments (LAN-only, like the others)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    """The instrument's name, as items and the feed show it."""
    bind: BindAddress = "0.0.0.0"
    port: Port
    allowed_peers: list[IPvAnyNetwork] = []
    """Addresses or networks allowed to connect; empty lets everyone in."""


class AstmSerialPort(_Section):
    """An instrument on a serial line (a USB-serial adapter on the box)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    device: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^/dev/")]
    """e.g. /dev/ttyUSB0, or better a stable /dev/serial/by-id/… name."""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class AstmConfig(_Section):
    listeners: list[AstmListener] = []
    serial: list[AstmSerialPort] = []
    frame_timeout_s: Seconds = 30
    """E1381: during a transfer, a frame must come within this long of the one before (a trickle of
    bytes does not count); otherwise the sender has given up and its unfinished message is dropped."""
    max_connections: Annotated[int, Field(ge=1, le=1000)] = 16
    """Per TCP listener; more are closed at once."""
    max_connections_per_peer: Annotated[int, Field(ge=1, le=1000)] = 4
    """Per TCP listener, connections one address may hold."""
    idle_timeout_s: Seconds = 3600
    """A connection with no transfer this long is closed (instruments keep theirs open for hours)."""
    drain_timeout_s: Seconds = 10
    """On stop, how long a transfer under way may take to finish."""

    @model_validator(mode="after")
    def _distinct(self) -> AstmConfig:
        for what in ("name", "port"):
            values = [getattr(listener, what) for listener in self.listeners]
            if len(values) != len(set(values)):
                raise ValueError(f"astm.listeners: each listener needs its own {what}")
        devices = [port.device for port in self.serial]
        if len(devices) != len(set(devices)):
            raise ValueError("astm.serial: each port needs its own device")
        names = [listener.name for listener in self.listeners] + [port.name for port in self.serial]
        if len(names) != len(set(names)):
            raise ValueError("astm: every listener and serial port needs its own name")
        return self


class WorklistConfig(_Section):
    """The Modality Worklist the gateway serves from Vetmanager's entries."""

    keep_days: Annotated[float, Field(gt=0, le=365)] = 7
    """An entry is forgotten this long after its scheduled time."""


def field_text(value: str) -> str:
    """A value that goes into an HL7 or ASTM field as it is (vmgateway.charsets.unfit_for_a_field)."""
    problem = unfit_for_a_field(value)
    if problem:
        raise ValueError(f"{problem}: a field takes text without the delimiters | ^ ~ \\ & and without control"
                         " characters")
    return value


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("it needs more than spaces")
    return value


Hl7Text = Annotated[str, Field(max_length=180, json_schema_extra={"pattern": FIELD_TEXT_PATTERN}),
                    AfterValidator(field_text)]
"""A value that goes into an HL7 field as it is: no delimiters, no control characters."""


def _instrument_charset(value: str) -> str:
    if not frames_safely(value):
        raise ValueError("a charset whose text cannot break an MLLP frame, such as 8859/1 or UNICODE UTF-8"
                         " (in UTF-16 and UTF-32 a letter can encode to the frame's end)")
    return value


class LabInstrument(_Section):
    """An analyzer in the clinic that takes orders over HL7 (MLLP over TCP), e.g. IDEXX VetLab Station."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    """What orders name (`instrument`) and status shows."""
    host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")]
    port: Port
    protocol: Literal["hl7"] = "hl7"
    """How orders reach it (HL7 ORM^O01). ASTM order download is not built yet."""
    hl7_version: Literal["2.3", "2.3.1", "2.4", "2.5", "2.5.1"] = "2.3.1"
    charset: Annotated[str, AfterValidator(_charset), AfterValidator(_instrument_charset)] = "8859/1"
    """MSH-18: the characters the instrument reads (HL7 table 0211, e.g. 8859/1, UNICODE UTF-8)."""
    sending_application: Hl7Text = "VMGATEWAY"
    sending_facility: Hl7Text = ""
    receiving_application: Hl7Text = ""
    receiving_facility: Hl7Text = ""
    answer_timeout_s: Seconds = 30
    """How long to wait for the instrument's ACK before trying again later."""


class LabConfig(_Section):
    """Lab orders out to the clinic's analyzers."""

    instruments: list[LabInstrument] = []
    max_attempts: Annotated[int, Field(ge=1, le=10000)] = 100
    """Sends of one message (no connection, no answer) before it is dead: kept, shown, retryable."""
    backoff_initial_s: Seconds = 5
    backoff_max_s: Seconds = 300

    @model_validator(mode="after")
    def _distinct(self) -> LabConfig:
        names = [instrument.name for instrument in self.instruments]
        if len(names) != len(set(names)):
            raise ValueError("lab.instruments: each instrument needs its own name")
        return self


class UpgradeConfig(_Section):
    """How `vmgateway upgrade` installs releases and restarts the service."""

    root: Path = Path("/opt/vmgateway")
    """releases/<version>/ (each with its own venv), the `current` link, the upgrade state, snapshots."""
    trusted_keys: Path = TRUSTED_KEYS
    """Ed25519 public keys (PEM, *.pem) whose signature a release bundle must carry."""
    service: Literal["systemd", "commands"] = "systemd"
    """systemd: systemctl and journalctl for the vmgateway unit; commands: the three commands below."""
    start_command: list[Annotated[str, Field(min_length=1)]] = []
    stop_command: list[Annotated[str, Field(min_length=1)]] = []
    """Stops through a drain (SIGTERM) and returns when the gateway has exited."""
    status_command: list[Annotated[str, Field(min_length=1)]] = []
    """Exits 0 while the gateway runs."""
    log_file: Path | None = None
    """Where the service's output goes (commands only): a failed trial's part of it is kept."""
    health_timeout_s: Annotated[float, Field(ge=5, le=3600)] = 120
    """A new release must pass its health check this soon after starting..."""
    migration_timeout_s: Annotated[float, Field(ge=5, le=86400)] = 3600
    """...or this soon, while it migrates the journal."""
    min_free_mb: Annotated[int, Field(ge=0)] = 1024
    keep_releases: Annotated[int, Field(ge=2, le=20)] = 3

    @model_validator(mode="after")
    def _commands_given(self) -> UpgradeConfig:
        if self.service == "commands" and not (self.start_command and self.stop_command and self.status_command):
            raise ValueError('upgrade.service = "commands" needs start_command, stop_command and status_command')
        return self


class Settings(_Section):
    site: SiteConfig = SiteConfig()
    pacs: PacsConfig = PacsConfig()
    storage: StorageConfig = StorageConfig()
    dicom: DicomConfig = DicomConfig()
    hl7: Hl7Config = Hl7Config()
    api: ApiConfig = ApiConfig()
    power: PowerConfig = PowerConfig()
    transfers: TransfersConfig = TransfersConfig()
    worklist: WorklistConfig = WorklistConfig()
    astm: AstmConfig = AstmConfig()
    lab: LabConfig = LabConfig()
    upgrade: UpgradeConfig = UpgradeConfig()

    @property
    def journal_path(self) -> Path:
        return self.storage.data_dir / "journal.sqlite"


def _describe(error: Any, model: type[BaseModel]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section: Any = model
        for part in error["loc"][:-1]:
            field = section.model_fields.get(str(part)) if section else None
            section = field.annotation if field else None
        allowed = ", ".join(section.model_fields) if section else "?"
        return f"{key}: unknown key (allowed here: {allowed})"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a whole section's consistency: the message names the keys
        return f"{key}: {message}"
    return f"{key} = {_without_secrets(error['input'])!r}: {message}"


_USERINFO = re.compile(r"(?<=://)[^/@]*@")


def _without_secrets(value: Any) -> Any:
    """A refused value as it may be shown: a URL's user and password replaced (a refusal once
    printed the password it refused)."""
    return _USERINFO.sub("…@", value) if isinstance(value, str) else value


def parse_settings(data: dict[str, Any], source: str = "configuration") -> Settings:
    """Validate a configuration mapping; raise ConfigError naming every wrong key."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(error, Settings) for error in exc.errors()]
        raise ConfigError(f"{source} is not valid:\n  " + "\n  ".join(lines)) from None


def config_file(given: str | os.PathLike[str] | None = None) -> str | None:
    """The configuration file, by the one rule every command follows: `given` (--config), else
    $VMGATEWAY_CONFIG, else the box's file when it exists, else None (the embedded defaults).

    Commands once disagreed (some always used the box's file, some never did): a token made by
    one landed in a journal the service never read.
    """
    if given:
        return os.fspath(given)
    if os.environ.get(ENV_CONFIG):
        return os.environ[ENV_CONFIG]
    return BOX_CONFIG if os.path.exists(BOX_CONFIG) else None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's TOML as a mapping, not yet validated; ConfigError when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
