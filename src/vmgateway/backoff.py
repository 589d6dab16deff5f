"""How long to wait after failures in a row: the one backoff rule of the gateway.

Doubling from `initial_s`, capped at `max_s`; with `jitter` a random 50–100 % of that, so that a
hundred boxes that lost the same upstream at the same moment do not come back in step.
"""

from __future__ import annotations

import random


def backoff(failures: int, initial_s: float, max_s: float, *, jitter: bool = False) -> float:
    """The wait after `failures` failures in a row (0: no failure, `initial_s`)."""
    ceiling = min(max_s, initial_s * 2 ** max(0, failures - 1))
    return float(ceiling * random.uniform(0.5, 1.0)) if jitter else float(ceiling)
