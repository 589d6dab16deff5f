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


FLOORS: list[tuple[str, set[str]]] = [
    ("values", {"vmgateway", "model", "records", "paths", "charsets", "when", "backoff", "clock", "files", "addresses",
                "logs", "counters"}),
    ("foundations", {"config", "store", "admission", "connections", "jobs", "overall"}),
    ("parts", {"remote_settings", "dicom", "hl7", "astm", "lab", "worklist", "pacs", "power", "transfers", "upgrade",
               "bundle", "site", "host", "identity"}),
    ("api", {"api"}),
    ("entry points", {"service", "doctor", "bootstrap", "cli", "__main__"}),
]
"""The package's floors, bottom first: a part imports only parts on the floors below its own,
and on its own floor only what SIDEWAYS lists. A part is a top-level module or subpackage of
vmgateway (`vmgateway` itself: its `__version__`)."""

SIDEWAYS: dict[str, set[str]] = {
    "records": {"model"},  # what the store answers is made of the values every part passes around
    "admission": {"logs"},
    "astm": {"lab"},  # a host query is answered with the lab order it names
    "lab": {"hl7"},  # orders go out over MLLP
    "transfers": {"astm"},  # the ASTM media type of a pushed message
    "pacs": {"dicom"},  # fetched instances are kept as received ones are
    "dicom": {"worklist"},  # the worklist SCP answers with worklist entries
    "upgrade": {"bundle", "dicom", "hl7", "power"},  # installs bundles; the health check echoes and sends HL7
    "host": {"remote_settings", "site", "upgrade"},  # installs a box: its settings, form, releases
    "identity": {"upgrade"},  # the releases a box runs
    "cli": {"bootstrap", "doctor", "service"},
    "__main__": {"cli"},
}


def _imports_by_module() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (at the top or inside a
    function alike: a deferred import is still a dependency)."""
    import ast

    src = ROOT / "src"
    graph: dict[str, set[str]] = {}
    for path in (src / "vmgateway").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vmgateway"):
                imported.add(str(node.module))
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}  # a submodule imported by name
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("vmgateway")}
        graph[module] = imported
    return {module: {name for name in imported if name in graph and name != module}
            for module, imported in graph.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph`, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        path: list[str] = []
        stack = [(start, iter(sorted(graph[start])))]
        on_path = {start}
        path.append(start)
        while stack:
            node, following = stack[-1]
            step = next(following, None)
            if step is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
            elif step in on_path:
                return path[path.index(step):] + [step]
            elif step not in done:
                stack.append((step, iter(sorted(graph.get(step, ())))))
                on_path.add(step)
                path.append(step)
    return None


def test_every_part_stands_on_its_floor() -> None:
    """No part imports one above it, nor one beside it that SIDEWAYS does not list."""
    floor_of = {part: number for number, (_, parts) in enumerate(FLOORS) for part in parts}
    modules = _imports_by_module()
    assert {_part(module) for module in modules} <= set(floor_of), "a new part: give it a floor in FLOORS"
    offenders = set()
    for module, imported in modules.items():
        for name in imported:
            here, there = _part(module), _part(name)
            if here == there or floor_of[there] < floor_of[here] or there in SIDEWAYS.get(here, set()):
                continue
            offenders.add(f"{module} imports {name} ({FLOORS[floor_of[there]][0]}, from {FLOORS[floor_of[here]][0]})")
    assert sorted(offenders) == []


def test_no_import_cycles() -> None:
    """Neither between modules nor between parts: each can be read (and tested) knowing only
    what is below it."""
    modules = _imports_by_module()
    parts: dict[str, set[str]] = {}
    for module, imported in modules.items():
        parts.setdefault(_part(module), set()).update(_part(name) for name in imported if _part(name) != _part(module))
    assert _cycle(modules) is None
    assert _cycle(parts) is None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_test_modules_share_only_through_support() -> None:
    """What two test modules need is in tests/support; none imports another, nor conftest."""
    import ast

    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if "conftest" in parts or any(part.startswith("test_") for part in parts):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert offenders == []
