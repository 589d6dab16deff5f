"""Retention: delivered files go (after keep_delivered_days, or sooner when the disk runs low),
undelivered ones never, and a file shared with bytes just received again stays."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import client, new_token
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk
from vmgateway.model import DicomInstance, Sender
from vmgateway.store import Store
from vmgateway.store.spool import Spool

DAY = 86400.0
MODALITY = Sender("dicom", "XRAY1", "127.0.0.1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "var", 0)
    store.open()
    yield store
    store.close()


def journal(store: Store) -> sqlite3.Connection:
    """The test's own connection to the store's journal (WAL: beside the store's writer)."""
    return sqlite3.connect(store.incoming_dir.parent.parent / "journal.sqlite", isolation_level=None)


def spool_file(store: Store, relative: str) -> Path:
    return store.incoming_dir.parent / relative


def remove_delivered_files(store: Store, delivered_before: float, soft_min_free_bytes: int) -> int:
    return asyncio.run(store.remove_delivered_files(delivered_before, soft_min_free_bytes))


def put(store: Store, content: bytes, uid: str) -> tuple[int, str]:
    """Keep `content` as a DICOM item; return its item id and spool path."""
    temporary = store.incoming_dir / f"{uid}.part"
    temporary.write_bytes(content)
    receipt = store.put_dicom(temporary, DicomInstance("1.2.840.10008.5.1.4.1.1.7", uid, "1.2.840.10008.1.2.1"),
                              MODALITY)
    conn = journal(store)
    path = conn.execute("SELECT spool_path FROM items WHERE id = ?", (receipt.item_id,)).fetchone()[0]
    conn.close()
    return receipt.item_id, path


def deliver(store: Store, at: float, *item_ids: int) -> None:
    """Delivered at `at` (in the past: the store's own mark_delivered says now)."""
    conn = journal(store)
    conn.executemany("UPDATE items SET state = 'delivered', delivered_at = ? WHERE id = ?",
                     [(at, item_id) for item_id in item_ids])
    conn.close()


def removed(store: Store, item_id: int) -> bool:
    conn = journal(store)
    spool_path, removed_at = conn.execute("SELECT spool_path, removed_at FROM items WHERE id = ?",
                                          (item_id,)).fetchone()
    conn.close()
    return spool_path is None and removed_at is not None


def test_delivered_files_go_after_the_keep_period_undelivered_never(store: Store) -> None:
    now = time.time()
    old, old_path = put(store, b"old and delivered", "1.1")
    recent, recent_path = put(store, b"delivered yesterday", "1.2")
    waiting, waiting_path = put(store, b"never delivered", "1.3")
    deliver(store, now - 8 * DAY, old)
    deliver(store, now - 1 * DAY, recent)

    assert remove_delivered_files(store, now - 7 * DAY, soft_min_free_bytes=0) == 1
    assert removed(store, old) and not spool_file(store, old_path).exists()
    assert not removed(store, recent) and spool_file(store, recent_path).exists()
    assert not removed(store, waiting) and spool_file(store, waiting_path).exists()
    conn = journal(store)  # the record stays
    assert conn.execute("SELECT state FROM items WHERE id = ?", (old,)).fetchone()[0] == "delivered"
    conn.close()


def test_low_disk_takes_younger_delivered_files_oldest_first_but_never_undelivered(store: Store) -> None:
    now = time.time()
    first, _ = put(store, b"a", "2.1")
    second, _ = put(store, b"b", "2.2")
    waiting, waiting_path = put(store, b"c", "2.3")
    deliver(store, now - 60, first)
    deliver(store, now - 30, second)
    more_than_the_disk = store.free_bytes() * 2
    assert remove_delivered_files(store, now - 7 * DAY, soft_min_free_bytes=more_than_the_disk) == 2
    assert removed(store, first) and removed(store, second)
    assert spool_file(store, waiting_path).exists() and not removed(store, waiting)


def test_a_file_shared_with_an_undelivered_item_stays(store: Store) -> None:
    now = time.time()
    delivered, path = put(store, b"same bytes", "3.1")
    again, again_path = put(store, b"same bytes", "3.2")  # e.g. a modality that sent it once more
    assert path == again_path
    deliver(store, now - 8 * DAY, delivered)
    assert remove_delivered_files(store, now - 7 * DAY, 0) == 0
    assert spool_file(store, path).exists()
    deliver(store, now - 8 * DAY, again)
    assert remove_delivered_files(store, now - 7 * DAY, 0) == 1
    assert not spool_file(store, path).exists() and removed(store, delivered) and removed(store, again)


def test_bytes_placed_again_while_their_old_file_is_doomed_are_kept(tmp_path: Path) -> None:
    """The handshake between retention and a receiver placing the same bytes at that moment."""
    spool = Spool(tmp_path / "spool", 0)
    spool.open()
    spool.root.joinpath("dicom/ab").mkdir(parents=True, exist_ok=True)
    assert spool.doom("dicom/ab/x.dcm")
    spool.root.joinpath("dicom/ab/x.dcm").write_bytes(b"x")
    with spool._names:  # a receiver claims the name (absorb does this before its rename)
        spool._claimed["dicom/ab/x.dcm"] = 1
        spool._doomed.discard("dicom/ab/x.dcm")
    assert not spool.remove_doomed("dicom/ab/x.dcm")  # the claim cancelled the removal
    assert not spool.doom("dicom/ab/x.dcm")  # and nothing can doom it while it is claimed
    spool.release("dicom/ab/x.dcm")
    assert spool.root.joinpath("dicom/ab/x.dcm").exists()
    assert spool.doom("dicom/ab/x.dcm") and spool.remove_doomed("dicom/ab/x.dcm")


@pytest.mark.peer
def test_the_feed_answers_410_for_a_removed_file_and_keeps_the_record(make_gateway: Any, tmp_path: Path) -> None:
    gateway: GatewayProcess = make_gateway(storage={"keep_delivered_days": 0})
    token = new_token(gateway, "vetmanager")
    files = copies_of_ct_small(tmp_path / "ct", 2)
    assert dcmtk("storescu", "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *files).returncode == 0
    ids = [row["item_id"] for row in gateway.instances()]
    with client(gateway, token) as api:
        api.post("/api/v1/transfers/activate")
        assert api.post("/api/v1/feed/ack", json={"item_ids": ids[:1]}).json() == {"delivered": ids[:1]}
    seen = len(gateway.log_lines)
    assert gateway.stop() == 0
    gateway.start()  # retention runs at start, then every minute
    gateway.wait_for_log('"msg": "removed delivered files", "count": 1', after=seen)
    with client(gateway, token) as api:
        gone = api.get(f"/api/v1/items/{ids[0]}/content")
        assert gone.status_code == 410 and "storage.keep_delivered_days" in gone.json()["detail"]
        assert api.get(f"/api/v1/items/{ids[0]}").json()["state"] == "delivered"
        assert api.get(f"/api/v1/items/{ids[1]}/content").status_code == 200
