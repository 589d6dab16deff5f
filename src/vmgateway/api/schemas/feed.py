"""The pull feed: items with the fields of their kind, complete studies, acknowledgements.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Literal

from pydantic import Field

from vmgateway.api.schemas.base import Answer, UnixTime


class DicomDetails(Answer):
    sop_instance_uid: str
    version: int = Field(description="1, 2, … for each different content sent under one SOP Instance UID.")
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    accession_number: str | None
    modality: str | None
    study_date: str | None
    species: str | None
    breed: str | None
    responsible_person: str | None
    order_id: str | None = Field(description="The worklist order the instance belongs to, when linked.")
    patient_id: str | None
    patient_name: str | None


class Hl7Details(Answer):
    sending_application: str
    sending_facility: str
    message_type: str
    control_id: str = Field(description="MSH-10.")
    processing_id: str = Field(description="MSH-11: P production, T test (the gateway's own tests), D debugging.")
    version: str
    charset: str = Field(description="MSH-18 as declared.")
    charset_used: str | None = Field(description="The character set the message was read in.")
    placer_order_number: str | None
    filler_order_number: str | None
    observation_count: int | None
    patient_id: str | None
    patient_name: str | None


class AstmDetails(Answer):
    listener: str
    instrument: str
    sample_ids: str
    patient_ids: str
    test_codes: str
    result_count: int


class LabLink(Answer):
    order_id: str


class Item(Answer):
    """One thing received: a DICOM instance, an HL7 message or an ASTM message."""

    id: int
    kind: Literal["dicom", "hl7", "astm"]
    state: Literal["received", "delivered", "dead"]
    received_at: UnixTime
    sender: str = Field(description="Calling AE title, MSH-3^MSH-4, or the ASTM instrument.")
    peer_address: str
    size: int
    sha256: str
    delivered_at: UnixTime | None
    dicom: DicomDetails | None = None
    hl7: Hl7Details | None = None
    astm: AstmDetails | None = None
    lab: LabLink | None = Field(default=None, description="The lab order this result answers (HL7 OBR-2, an ASTM"
                                                         " sample id), when it is one of Vetmanager's.")


class FeedPage(Answer):
    items: list[Item]
    next: int = Field(description="The cursor (an item ID) for the next page.")


class Acknowledged(Answer):
    delivered: list[int] = Field(description="The IDs that were not delivered before this call.")


class StudyInstance(Answer):
    item_id: int
    sop_instance_uid: str
    version: int
    series_instance_uid: str | None


class Study(Answer):
    study_instance_uid: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None
    modalities: str
    instance_count: int
    first_received_at: UnixTime
    last_received_at: UnixTime
    completed_at: UnixTime | None
    instances: list[StudyInstance]


class StudiesPage(Answer):
    studies: list[Study]
    next: str = Field(description="The cursor (a Study Instance UID) for the next page.")
