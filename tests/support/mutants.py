"""The gateway with one fsync taken out, to show that the power-cut test catches it.

`python -m tests.support.mutants NAME run --config FILE` runs the CLI after one change:

- `spool_directory_fsync`: the spool's folder is not fsync'ed after a file is renamed into it;
- `spool_file_fsync`: a received file is not fsync'ed before its rename;
- `journal_synchronous_normal`: the journal runs with `synchronous = NORMAL` (WAL not fsync'ed per commit).

A test that passes against one of these proves nothing: each must lose an acknowledged item.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import types
from typing import Any


def _without_spool_directory_fsync() -> None:
    from vmgateway.store import spool

    spool.fsync_directory = lambda path: None  # type: ignore[attr-defined]


def _without_spool_file_fsync() -> None:
    from vmgateway.store import spool

    spool.os = types.SimpleNamespace(**vars(os) | {"fsync": lambda fd: None})  # type: ignore[attr-defined,assignment]


def _with_journal_synchronous_normal() -> None:
    from vmgateway.store import journal

    connect = journal.connect

    def lowered(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    journal.connect = lowered


MUTANTS = {
    "spool_directory_fsync": _without_spool_directory_fsync,
    "spool_file_fsync": _without_spool_file_fsync,
    "journal_synchronous_normal": _with_journal_synchronous_normal,
}


if __name__ == "__main__":
    MUTANTS[sys.argv[1]]()
    from vmgateway.cli import main

    sys.argv = ["vmgateway", *sys.argv[2:]]
    sys.exit(main())
