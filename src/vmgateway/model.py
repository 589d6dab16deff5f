"""The values every part of the gateway passes around: who sent something, what it was, what
became of it.

This module imports nothing from the package, so the protocol parsers (DICOM, HL7, ASTM) can
describe what they received without knowing the store, and the store can record it without
knowing the protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal, get_args

ItemKind = Literal["dicom", "hl7", "astm"]
"""What an item is: a DICOM instance (its file in the spool), an HL7 or an ASTM message (its bytes
in the journal)."""
ITEM_KINDS: tuple[ItemKind, ...] = get_args(ItemKind)

SenderProtocol = Literal["dicom", "hl7", "astm", "pacs"]
"""How a sender reached the gateway: it connected (DICOM, HL7, ASTM), or the gateway fetched
from it (the PACS poller's C-GET)."""

@dataclass(frozen=True, slots=True)
class Sender:
    protocol: SenderProtocol
    name: str
    """The calling AE title, the HL7 sending application^facility, or the ASTM listener."""
    address: str
    """The peer's IP address (or the serial port)."""


OWN_TEST_AE_PREFIX = "VMGW_"
"""Calling AE titles of the gateway's own checks (doctor, upgrade health check): VMGW_DOCTOR, …"""
OWN_TEST_APPLICATION_PREFIX = "VMGATEWAY-"
"""HL7 sending applications of the gateway's own test messages: VMGATEWAY-TEST, VMGATEWAY-UPGRADE."""


def is_own_test(protocol: str, name: str) -> bool:
    """Whether a sender is the gateway testing itself, not one of the clinic's devices."""
    if protocol == "dicom":
        return name.startswith(OWN_TEST_AE_PREFIX)
    return protocol == "hl7" and name.startswith(OWN_TEST_APPLICATION_PREFIX)


@dataclass(frozen=True, slots=True)
class DicomInstance:
    """The journal's view of one received instance; text already decoded with its charset."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    study_date: str | None = None
    species: str | None = None
    breed: str | None = None
    responsible_person: str | None = None


@dataclass(frozen=True, slots=True)
class Hl7Message:
    """The MSH of a received HL7 message, as the journal keeps it (read before the ACK)."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    control_id: str
    """MSH-10; empty when the sender left it out (then duplicates are found by hash only)."""
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str


@dataclass(frozen=True, slots=True)
class Hl7Details:
    """What a full parse adds, after the ACK."""

    charset_used: str
    patient_id: str | None
    patient_name: str | None
    placer_order_number: str | None
    filler_order_number: str | None
    observation_count: int


@dataclass(frozen=True, slots=True)
class AstmSummary:
    """What the journal keeps beside an ASTM message's raw bytes, for the feed and for people."""

    instrument: str
    sample_ids: str
    patient_ids: str
    test_codes: str
    result_count: int


class Kept(Enum):
    """What keeping an item came to (all three are kept promises: the sender may forget it)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    """The same item again (same SOP Instance UID or MSH-10, same bytes): nothing new recorded."""
    NEW_VERSION = "new_version"
    """Same SOP Instance UID, different bytes: kept beside the earlier version(s)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    item_id: int
    kept: Kept
    version: int
