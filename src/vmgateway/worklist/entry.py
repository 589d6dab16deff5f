"""A worklist entry as Vetmanager sends it, and the DICOM worklist item it becomes.

Veterinary naming follows DICOM's convention (PS3.3 C.7.1.1.1.1 "Patient's Name" for animals):
Patient's Name is the owner's family name and the animal's name, `Family^Animal`; the owner is
the Responsible Person with role OWNER. Vetmanager's order ID goes in Placer Order Number /
Imaging Service Request (0040,2016), where a modality copies it into the images it makes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset

from vmgateway.config import AETitle

ShortString = Annotated[str, Field(max_length=16, pattern=r"^[^\\\\\r\n]*$")]
LongString = Annotated[str, Field(max_length=64, pattern=r"^[^\\\\\r\n]*$")]
NamePart = Annotated[str, Field(max_length=64, pattern=r"^[^\\\\^=\r\n]*$")]
Uid = Annotated[str, Field(max_length=64, pattern=r"^$|^[0-9]+(\.[0-9]+)*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Code(_Model):
    """A coded concept, e.g. SNOMED CT 448771007 "Canis lupus subsp. familiaris"."""

    value: ShortString
    scheme: ShortString = "SCT"
    meaning: LongString


class Animal(_Model):
    name: NamePart = Field(min_length=1)
    patient_id: LongString = Field(min_length=1, description="Vetmanager's patient ID")
    species: LongString = ""
    species_code: Code | None = None
    breed: LongString = ""
    breed_code: Code | None = None
    sex: Literal["M", "F", "O", ""] = ""
    neutered: Literal["ALTERED", "UNALTERED", ""] = ""
    birth_date: date | None = None


class Person(_Model):
    family_name: NamePart = Field(min_length=1)
    given_name: NamePart = ""

    def pn(self) -> str:
        return f"{self.family_name}^{self.given_name}" if self.given_name else self.family_name


class WorklistEntry(_Model):
    order_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    """Vetmanager's order ID: the entry's key."""
    accession_number: ShortString = Field(min_length=1)
    requested_procedure_id: ShortString = ""
    requested_procedure_description: LongString = ""
    modality: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9_ ]+$")]
    station_ae: AETitle | Literal[""] = ""
    scheduled_at: datetime
    """Local time at the clinic, without a zone (as DICOM's DA and TM are)."""
    referring_vet: Person | None = None
    study_instance_uid: Uid = ""
    """Fixed by Vetmanager, or left empty and made by the gateway when the entry is created."""
    animal: Animal
    owner: Person


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme, code.meaning
    return item


def entry_to_json(entry: WorklistEntry) -> str:
    """The entry as the journal keeps it."""
    return entry.model_dump_json()


def entry_from_json(kept: str) -> WorklistEntry:
    """The entry the journal kept (valid when it was put: read back as it was)."""
    return WorklistEntry.model_validate_json(kept)


def worklist_item(entry: WorklistEntry, charset: str) -> Dataset:
    """The full worklist item; a query's answer is the part of it the query asked for."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    animal, owner = entry.animal, entry.owner
    ds.AccessionNumber = entry.accession_number
    ds.ReferringPhysicianName = entry.referring_vet.pn() if entry.referring_vet else ""
    ds.PatientName = f"{owner.family_name}^{animal.name}"
    ds.PatientID = animal.patient_id
    ds.PatientBirthDate = animal.birth_date.strftime("%Y%m%d") if animal.birth_date else ""
    ds.PatientSex = animal.sex
    ds.PatientSpeciesDescription = animal.species
    ds.PatientSpeciesCodeSequence = [_code_item(animal.species_code)] if animal.species_code else []
    ds.PatientBreedDescription = animal.breed
    ds.PatientBreedCodeSequence = [_code_item(animal.breed_code)] if animal.breed_code else []
    ds.PatientSexNeutered = animal.neutered
    ds.ResponsiblePerson = owner.pn()
    ds.ResponsiblePersonRole = "OWNER"
    ds.StudyInstanceUID = entry.study_instance_uid
    ds.RequestedProcedureID = entry.requested_procedure_id or entry.accession_number
    ds.RequestedProcedureDescription = entry.requested_procedure_description
    ds.PlacerOrderNumberImagingServiceRequest = entry.order_id
    step = Dataset()
    step.Modality = entry.modality
    step.ScheduledStationAETitle = entry.station_ae
    step.ScheduledProcedureStepStartDate = entry.scheduled_at.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = entry.scheduled_at.strftime("%H%M%S")
    step.ScheduledProcedureStepID = entry.requested_procedure_id or entry.accession_number
    step.ScheduledProcedureStepDescription = entry.requested_procedure_description
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds
