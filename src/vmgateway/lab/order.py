"""A lab order as Vetmanager sends it (`POST /api/v1/lab/orders`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from vmgateway.charsets import FIELD_TEXT_PATTERN
from vmgateway.config import Hl7Text, field_text, not_blank


def _names_something(value: str) -> str:
    if not any(character.isalnum() for character in value):
        raise ValueError("an id needs a letter or a digit")
    return value


OrderId = Annotated[str, Field(min_length=1, max_length=22, pattern=r"^[A-Za-z0-9._:-]+$"),
                    AfterValidator(_names_something)]
"""Vetmanager's order id: ORC-2 and OBR-2, the placer order number a result comes back with.
22 characters: what an EI's first component holds in HL7 2.3.1, which most analyzers speak."""
NamePart = Annotated[str, Field(max_length=48, json_schema_extra={"pattern": FIELD_TEXT_PATTERN}),
                     AfterValidator(field_text)]
Name = Annotated[NamePart, Field(min_length=1), AfterValidator(not_blank)]
"""A name that must be there: not empty, not only spaces."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabTest(_Model):
    code: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[^|^~\\&\x00-\x20\x7f-\x9f]+$"),
                    AfterValidator(field_text)]
    """The instrument's code for the test or panel (OBR-4.1), e.g. CHEM17."""
    text: Hl7Text = ""
    """What it is called (OBR-4.2), e.g. Chem 17 panel."""


class LabAnimal(_Model):
    name: Name
    patient_id: Annotated[str, Field(min_length=1, max_length=20, json_schema_extra={"pattern": FIELD_TEXT_PATTERN}),
                          AfterValidator(field_text), AfterValidator(not_blank)]
    """Vetmanager's patient id (PID-3)."""
    species: Hl7Text = ""
    breed: Hl7Text = ""
    sex: Literal["M", "F", "O", "U", ""] = ""
    birth_date: date | None = None
    weight_kg: Annotated[float, Field(gt=0, le=2000)] | None = None


class LabOwner(_Model):
    family_name: Name
    given_name: NamePart = ""


class LabOrder(_Model):
    order_id: OrderId
    instrument: Annotated[str, Field(min_length=1, max_length=64)]
    """The analyzer it is for: the name of one of `[[lab.instruments]]`."""
    animal: LabAnimal
    owner: LabOwner
    tests: list[LabTest] = Field(min_length=1, max_length=50)
    priority: Literal["routine", "stat"] = "routine"
