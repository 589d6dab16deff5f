"""Releases made for tests: this source tree under another version, with patches that make it
migrate the journal, fail its health check, or not start at all."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).parents[2]
Patch = tuple[str, str, str]
"""A file under src/, a text in it, what replaces that text."""
MIGRATIONS_END = "]\n\nSCHEMA_VERSION = len(MIGRATIONS)"
BROKEN_HEALTH: Patch = ("vmgateway/api/gateway.py", 'return {"status": "ok", "journal": "written"}',
                        'raise HTTPException(503, "broken on purpose")')
CANNOT_START: Patch = ("vmgateway/cli.py", "def _run(args: argparse.Namespace) -> int:\n",
                       "def _run(args: argparse.Namespace) -> int:\n    print('this release cannot start')\n"
                       "    return 3\n")


def add_migration(table: str) -> Patch:
    return ("vmgateway/store/schema.py", MIGRATIONS_END,
            f'    "CREATE TABLE {table} (id INTEGER PRIMARY KEY)",\n' + MIGRATIONS_END)


def patched_tree(folder: Path, version: str, patches: list[Patch]) -> Path:
    """A copy of this source tree as release `version`, with `patches`, to build from."""
    tree = folder / f"tree-{version}"
    shutil.copytree(REPO / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".mypy_cache"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    for relative, old, new in [("vmgateway/__init__.py", '__version__ = "', f'__version__ = "{version}"  # was "'),
                               *patches]:
        path = tree / "src" / relative
        text = path.read_text()
        assert old in text, (relative, old)
        path.write_text(text.replace(old, new, 1))
    return tree
