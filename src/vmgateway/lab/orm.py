"""The HL7 v2 ORM^O01 an analyzer reads: pure, no I/O.

Field by field (README, "Lab orders out"): PID-3 Vetmanager's patient id; PID-5 the owner's family
name and the animal's name, `Family^Animal`, as the Modality Worklist writes Patient's Name;
PID-7 birth date; PID-8 sex; from HL7 2.4 on PID-35/36 species and breed (text, no code); NK1 the
owner (relationship OWN); PV1 an outpatient; per test an ORC (NW new, CA cancel, XO change; ORC-2
the placer order number = Vetmanager's order id; ORC-7 priority R or S) and an OBR (OBR-2 the same
placer number, OBR-4 the instrument's test code and its text); the weight as an OBX in kg.
"""

from __future__ import annotations

from datetime import datetime

from vmgateway.charsets import codec_for
from vmgateway.config import LabInstrument
from vmgateway.lab.order import LabOrder
from vmgateway.records import Control

_SPECIES_FROM = ("2.4", "2.5", "2.5.1")
"""Versions whose PID has Species Code (PID-35) and Breed Code (PID-36)."""


class CannotEncode(ValueError):
    """A value holds characters the instrument's charset cannot carry."""


def orm_o01(order: LabOrder, instrument: LabInstrument, control: Control, control_id: str, at: datetime) -> bytes:
    """The message, encoded in the instrument's charset (MSH-18); raises CannotEncode naming the value."""
    now = at.strftime("%Y%m%d%H%M%S")
    version = instrument.hl7_version
    message_type = "ORM^O01" if version not in _SPECIES_FROM else "ORM^O01^ORM_O01"
    charset = "" if instrument.charset.upper() == "ASCII" else instrument.charset
    animal, owner = order.animal, order.owner
    pid = ["PID", "1", "", animal.patient_id, "", f"{owner.family_name}^{animal.name}", "",
           animal.birth_date.strftime("%Y%m%d") if animal.birth_date else "", animal.sex]
    if version in _SPECIES_FROM and (animal.species or animal.breed):
        pid += [""] * (35 - len(pid)) + [f"^{animal.species}" if animal.species else "",
                                         f"^{animal.breed}" if animal.breed else ""]
    priority = "S" if order.priority == "stat" else "R"
    segments = [
        ["MSH", "^~\\&", instrument.sending_application, instrument.sending_facility,
         instrument.receiving_application, instrument.receiving_facility, now, "", message_type, control_id, "P",
         version, "", "", "", "", "", charset],
        pid,
        ["NK1", "1", f"{owner.family_name}^{owner.given_name}" if owner.given_name else owner.family_name,
         "OWN^Owner^HL70063"],
        ["PV1", "1", "O"],
    ]
    for number, test in enumerate(order.tests, start=1):
        segments.append(["ORC", control, order.order_id, "", "", "", "", f"^^^^^{priority}", "", now])
        segments.append(["OBR", str(number), order.order_id, "", f"{test.code}^{test.text}" if test.text else test.code,
                         priority, now])
        if number == 1 and animal.weight_kg is not None:
            segments.append(["OBX", "1", "NM", "WEIGHT^Body weight", "", f"{animal.weight_kg:g}", "kg", "", "", "",
                             "", "F"])
    text = "\r".join("|".join(fields).rstrip("|") for fields in segments) + "\r"
    try:
        return text.encode(codec_for(instrument.charset or "8859/1"))
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end]
        raise CannotEncode(f"{bad!r} cannot be sent in {instrument.name}'s charset {instrument.charset}") from None
