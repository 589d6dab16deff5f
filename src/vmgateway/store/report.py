"""Read-only summaries of a journal by its path, for commands that run beside the gateway
(`vmgateway status`, the upgrade's checks) without opening a store.

Reads go through their own connection: WAL lets them run while the gateway writes.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

from vmgateway.records import (
    Event,
    ReceivedSummary,
    ReceivedToday,
    ReceivedTotals,
    StudiesSummary,
    StudySummary,
    TransfersReport,
)
from vmgateway.store.access import GATEWAY_ID, commissioned, get_setting, transfers_active
from vmgateway.store.deliveries import oldest_waiting_at, queue_summary
from vmgateway.store.feed import counts, senders
from vmgateway.store.journal import connect

_LIST_LIMIT = 20


class NoJournal(Exception):
    """There is no journal where the configuration says: the gateway has not run there."""


def running_as(journal_path: Path) -> tuple[str | None, float | None]:
    """The gateway id, and when the gateway last started if it has not stopped since (None: not
    running, or stopped cleanly); read from the journal, for commands run beside the service."""
    if not journal_path.exists():
        return None, None
    conn = connect(journal_path, read_only=True)
    try:
        gateway_id = get_setting(conn, GATEWAY_ID, "") or None
        last = conn.execute("SELECT kind, at FROM events WHERE kind IN ('start', 'stop') ORDER BY id DESC LIMIT 1"
                            ).fetchone()
    finally:
        conn.close()
    return gateway_id, last[1] if last and last[0] == "start" else None


def received_summary(journal_path: Path, stable_after_s: float, now: float | None = None) -> ReceivedSummary:
    """Totals, today's counts, studies (complete / arriving) and senders' last contact.

    A study counts as complete when it was marked so, or when it has been quiet for
    `stable_after_s` — the latter keeps the answer right while the gateway is stopped.
    """
    if not journal_path.exists():
        raise NoJournal(f"no journal at {journal_path}: has the gateway run with this configuration?")
    now = time.time() if now is None else now
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    quiet_since = now - stable_after_s
    conn = connect(journal_path, read_only=True)
    try:
        totals = counts(conn)
        today = conn.execute(
            "SELECT count(*) AS items, coalesce(sum(size), 0) AS bytes FROM items WHERE received_at >= ?",
            (midnight,),
        ).fetchone()
        today_by_kind = conn.execute(
            "SELECT kind, count(*) FROM items WHERE received_at >= ? GROUP BY kind", (midnight,)
        ).fetchall()
        complete = conn.execute(
            "SELECT count(*) FROM studies WHERE completed_at IS NOT NULL OR last_received_at < ?", (quiet_since,)
        ).fetchone()[0]
        arriving = conn.execute(
            "SELECT * FROM studies WHERE completed_at IS NULL AND last_received_at >= ?"
            " ORDER BY last_received_at DESC LIMIT ?",
            (quiet_since, _LIST_LIMIT),
        ).fetchall()
        recent = conn.execute(
            "SELECT * FROM studies WHERE completed_at IS NOT NULL OR last_received_at < ?"
            " ORDER BY last_received_at DESC LIMIT ?",
            (quiet_since, _LIST_LIMIT),
        ).fetchall()
        seen = senders(conn)
        last_events = conn.execute("SELECT id, at, kind, detail FROM events ORDER BY id DESC LIMIT 5").fetchall()
    finally:
        conn.close()
    return ReceivedSummary(
        journal=str(journal_path),
        generated_at=now,
        totals=ReceivedTotals(totals.items, totals.bytes, totals.by_state, totals.by_kind),
        today=ReceivedToday(today[0], today[1], {kind: n for kind, n in today_by_kind}),
        studies=StudiesSummary(complete, [_study(row) for row in arriving], [_study(row) for row in recent]),
        senders=seen,
        events=[Event(*row) for row in last_events],
    )


def _study(row: sqlite3.Row) -> StudySummary:
    return StudySummary(row["study_instance_uid"], row["patient_id"], row["patient_name"], row["accession_number"],
                        row["study_date"], row["modalities"], row["instance_count"], row["first_received_at"],
                        row["last_received_at"])


def waiting_items(journal_path: Path) -> int:
    """Items not yet delivered or given up on (0 when there is no journal yet)."""
    if not journal_path.exists():
        return 0
    conn = connect(journal_path, read_only=True)
    try:
        return sum(kind.waiting for kind in queue_summary(conn).values())
    finally:
        conn.close()


def transfers_report(journal_path: Path) -> TransfersReport:
    """Whether transfers are on, items waiting (and since when the oldest), items dead."""
    if not journal_path.exists():
        raise NoJournal(f"no journal at {journal_path}: has the gateway run with this configuration?")
    conn = connect(journal_path, read_only=True)
    try:
        queue = queue_summary(conn)
        return TransfersReport(active=transfers_active(conn), commissioned=commissioned(conn),
                               waiting=sum(kind.waiting for kind in queue.values()),
                               dead=sum(kind.dead for kind in queue.values()),
                               oldest_waiting_at=oldest_waiting_at(conn))
    finally:
        conn.close()
