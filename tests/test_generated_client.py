"""A client generated from the committed `docs/openapi.json` by a real generator
(openapi-python-client), used as Vetmanager's side would use it: page the feed, fetch each item's
bytes, acknowledge. If the document's types, operation ids or media types were wrong, the
generated code would not parse the answers (or would return bare dicts), and this would fail."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.clients import MLLP_SEND, SAMPLES, new_token
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk

DOCUMENT = Path(__file__).parent.parent / "docs" / "openapi.json"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "vmgateway_management_api_client"
# HL7's media type is not one the generator knows; as a consumer would, say it is text.
GENERATOR_CONFIG = "content_type_overrides:\n  x-application/hl7-v2+er7: text/plain\n"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, importable; its modules are forgotten afterwards."""
    folder = tmp_path_factory.mktemp("client")
    (folder / "config.yaml").write_text(GENERATOR_CONFIG)
    made = subprocess.run([str(GENERATOR), "generate", "--path", str(DOCUMENT), "--meta", "none",
                           "--config", str(folder / "config.yaml")], cwd=folder, capture_output=True, text=True,
                          timeout=120, env=os.environ | {"PATH": f"{GENERATOR.parent}:{os.environ['PATH']}"})
    assert made.returncode == 0, made.stdout + made.stderr  # its post hooks run ruff, beside it
    assert "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr  # nothing left out
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def operation(tag: str, name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")


@pytest.mark.peer
def test_a_generated_client_pages_the_feed_fetches_content_and_acknowledges(
        generated: Any, gateway: GatewayProcess, tmp_path: Path) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    instances = copies_of_ct_small(tmp_path / "ct", 2)
    assert dcmtk("storescu", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port), *instances).returncode == 0
    hl7 = SAMPLES / "oru_r01_swedish_latin1_v25.hl7"
    (tmp_path / "m.hl7").write_bytes(b"\x0b" + hl7.read_bytes() + b"\x1c\r")
    sent = subprocess.run([str(MLLP_SEND), "-p", str(gateway.hl7_port), "-f", str(tmp_path / "m.hl7"), "127.0.0.1"],
                          capture_output=True, timeout=60)
    assert sent.returncode == 0

    api = generated.AuthenticatedClient(base_url=f"https://127.0.0.1:{gateway.api_port}",
                                        token=new_token(gateway, "vetmanager"), verify_ssl=False)
    with api:
        closed = operation("feed", "list_feed").sync(client=api)
        assert isinstance(closed, models.Problem) and "activate" in closed.detail  # 409, typed
        assert operation("transfers", "activate_transfers").sync(client=api).active is True
        status = operation("gateway", "get_status").sync(client=api)
        assert isinstance(status, models.Status) and status.queue.undelivered == 3
        assert status.components.dicom.state.value == "running"
        assert status.components["job:retention"].restarts == 0  # jobs: typed extra components

        taken: dict[int, bytes] = {}
        cursor = 0
        for _ in range(10):  # one item a page: the cursor must carry the reader through
            page = operation("feed", "list_feed").sync(client=api, after=cursor, limit=1)
            assert isinstance(page, models.FeedPage)
            if not page.items:
                break
            [item] = page.items
            content = operation("feed", "get_item_content").sync(client=api, item_id=item.id)
            taken[item.id] = content.payload.read()
            assert hashlib.sha256(taken[item.id]).hexdigest() == item.sha256
            if item.kind.value == "dicom":
                assert item.dicom.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and item.dicom.version == 1
            else:
                assert (item.hl7.control_id, item.hl7.processing_id, item.hl7.charset) == ("UV-5521", "P", "8859/1")
            cursor = page.next_
        assert len(taken) == 3

        acked = operation("feed", "acknowledge_items").sync(client=api, body=models.AckRequest(item_ids=list(taken)))
        assert isinstance(acked, models.Acknowledged) and acked.delivered == list(taken)
        after = operation("feed", "list_feed").sync(client=api)
        assert after.items == [] and after.next_ == 0
        missing = operation("feed", "get_item").sync(client=api, item_id=999)
        assert isinstance(missing, models.Problem) and missing.detail == "no item 999"
        events = operation("gateway", "list_events").sync(client=api, kind="audit")
        assert [e.detail for e in events.events][:2] == ["vetmanager: acknowledged 3 item(s)",
                                                         "vetmanager: transfers activated"]
