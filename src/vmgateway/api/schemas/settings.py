"""The settings the gateway runs with, and remote changes to them.
(No `from __future__ import annotations`: pydantic reads the annotations at run time.)"""

from typing import Any

from pydantic import Field

from vmgateway.api.schemas.base import Answer
from vmgateway.config import Settings


class SettingsShown(Answer):
    settings: Settings = Field(description="The configuration the gateway runs with now.")
    file: str | None = Field(description="The configuration file it started with (null: the embedded defaults).")
    remote_file: str = Field(description="Where remote changes are kept, laid over the file at every start.")
    remote: dict[str, Any] = Field(description="What that file holds.")
    version: str = Field(description="Send it back with a change: a change made in between is then refused (409).")
    changeable: list[str] = Field(description="The keys (or sections) that may change remotely.")
    restart_needed: list[str] = Field(description="Keys changed since the start that take effect at the next one.")


class SettingsChanged(Answer):
    changed: list[str]
    restart_needed: list[str] = Field(description="Of those, the ones that take effect at the next start.")
    version: str
