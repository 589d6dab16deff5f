"""The linters are part of the suite, so what lands stays clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
TOOLS = Path(sys.executable).parent
SQL = re.compile(r"\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b|\bPRAGMA\b", re.S)


def test_ruff() -> None:
    result = subprocess.run([str(TOOLS / "ruff"), "check", "src", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout


def test_mypy_strict_over_src_and_tests() -> None:
    """`[tool.mypy]` in pyproject.toml: strict, over src and tests."""
    result = subprocess.run([str(TOOLS / "mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout


def _python_outside_the_store() -> list[Path]:
    package = ROOT / "src" / "vmgateway"
    return [path for path in package.rglob("*.py") if (package / "store") not in path.parents]


def test_the_store_is_the_only_way_to_the_journal_and_the_spool() -> None:
    """sqlite3 and SQL only under store/; nobody else reaches the store's journal or spool."""
    import ast

    offenders = []
    for path in _python_outside_the_store():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if "sqlite3" in names:
                    offenders.append(f"{path.name}:{node.lineno} imports sqlite3")
                if (getattr(node, "module", None) or "").startswith("vmgateway.store.journal"):
                    offenders.append(f"{path.name}:{node.lineno} imports the journal")
            elif isinstance(node, ast.Attribute) and node.attr in ("journal", "_journal", "spool", "_spool"):
                offenders.append(f"{path.name}:{node.lineno} reaches .{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                offenders.append(f"{path.name}:{node.lineno} writes SQL")
    assert offenders == []
