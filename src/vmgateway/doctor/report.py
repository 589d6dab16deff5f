"""Findings and how they are shown: one line each, the advice indented under it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any


class Level(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    summary: str
    advice: str = ""
    """What to do, when the level is not OK."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"level": self.level.name}


def ok(check: str, summary: str) -> Finding:
    return Finding(check, Level.OK, summary)


def warn(check: str, summary: str, advice: str) -> Finding:
    return Finding(check, Level.WARN, summary, advice)


def fail(check: str, summary: str, advice: str) -> Finding:
    return Finding(check, Level.FAIL, summary, advice)


def text(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.level.name:<5} {finding.check:<12} {finding.summary}")
        if finding.advice:
            lines.append(f"{'':<18}→ {finding.advice}")
    return "\n".join(lines) + "\n"


def exit_code(findings: list[Finding]) -> int:
    """0 all OK, 1 a warning at worst, 2 a failure."""
    return int(max((finding.level for finding in findings), default=Level.OK))
