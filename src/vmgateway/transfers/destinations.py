"""The destinations `[transfers]` configures, each with its sink and HTTP client."""

from __future__ import annotations

from vmgateway.config import TransfersConfig
from vmgateway.model import ItemKind
from vmgateway.store import Store
from vmgateway.transfers import upstream
from vmgateway.transfers.message_post import MessageSink
from vmgateway.transfers.pacing import Pace
from vmgateway.transfers.stow import StowSink
from vmgateway.transfers.worker import Destination


def build(config: TransfersConfig, store: Store, gateway_id: str) -> list[Destination]:
    """Nothing in pull mode; in push mode one destination per configured URL."""
    if config.mode != "push":
        return []
    found = []
    if config.dicomweb_url:
        pace = Pace(config.max_upload_kbit_s) if config.max_upload_kbit_s else None
        stow = StowSink(config.dicomweb_url, upstream.client(config), config.batch_max_instances,
                        config.batch_max_mb * 2**20, pace)
        found.append(Destination(stow, config.dicomweb_url, store, config))
    messages: tuple[tuple[ItemKind, str], ...] = (("hl7", config.hl7_url), ("astm", config.astm_url))
    for kind, url in messages:
        if url:
            sink = MessageSink(kind, url, upstream.client(config), store, gateway_id)
            found.append(Destination(sink, url, store, config))
    return found
