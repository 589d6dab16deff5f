"""Prints the API's OpenAPI document: `python -m vmgateway.api.openapi > docs/openapi.json`.

The committed copy is compared with this in the tests, so a change to the API shows in review.
"""

import json
import tempfile
import time
from pathlib import Path

from vmgateway.api.app import GatewayView, create_app
from vmgateway.config import Settings
from vmgateway.store import Store


async def _no_poll() -> dict[str, object]:
    return {}


def document() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.model_validate({"storage": {"data_dir": folder}})
        view = GatewayView(settings, Store(Path(folder), 0), time.time(), dict, dict, dict, dict, dict, _no_poll)
        return create_app(view).fastapi.openapi()  # type: ignore[no-any-return]


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
