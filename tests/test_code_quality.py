"""The linters are part of the suite, so what lands stays clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
TOOLS = Path(sys.executable).parent


def test_ruff() -> None:
    result = subprocess.run([str(TOOLS / "ruff"), "check", "src", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout


def test_mypy() -> None:
    result = subprocess.run([str(TOOLS / "mypy"), "--ignore-missing-imports", "src"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout
