"""E1394 host query, without I/O: an analyzer asks for the orders of a sample (a Q record), the
gateway answers with what Vetmanager ordered for it (H, P, O, L), or "no information" (L-3 `I`).

The sample id an analyzer asks about is the order id Vetmanager printed on the tube's label
(Q-3, the starting range ID: its second component, the specimen ID, or the first when there is
only one), as the result's O-3 later carries it back.
"""

from __future__ import annotations

from vmgateway.astm.records import AstmMessage
from vmgateway.lab.order import LabOrder


def queried_samples(message: AstmMessage) -> list[str] | None:
    """The sample ids a query asks about, in its order; None when the message is no query."""
    queries = [record for record in message.records if record.type == "Q"]
    if not queries or any(record.type == "R" for record in message.records):
        return None
    d = message.delimiters
    return [q.get(3, 2, d) or q.get(3, 1, d) for q in queries if q.get(3, 2, d) or q.get(3, 1, d)]


def answer_records(found: list[tuple[str, LabOrder | None]], at: str) -> list[bytes]:
    """H, then for each sample with a pending order its P and O records, then L: `N` when something
    was found, `I` (no information available from the last query) when nothing was."""
    records = [f"H|\\^&|||VMGATEWAY|||||||P|LIS2-A2|{at}"]
    number = 0
    for sample, order in found:
        if order is None:
            continue
        number += 1
        animal, owner = order.animal, order.owner
        birth = animal.birth_date.strftime("%Y%m%d") if animal.birth_date else ""
        tests = "\\".join(f"^^^{test.code}" for test in order.tests)
        records.append(f"P|{number}||{animal.patient_id}||{owner.family_name}^{animal.name}||{birth}|{animal.sex}")
        records.append(f"O|1|{sample}||{tests}|{'S' if order.priority == 'stat' else 'R'}||||||N")
    records.append(f"L|1|{'N' if number else 'I'}")
    return [record.encode("latin-1", errors="replace") for record in records]
