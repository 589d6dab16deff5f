"""Where a box keeps things. Standard library only: the bootstrap reads it on a bare box, before
any dependency is installed, and the configuration takes its defaults from it."""

from __future__ import annotations

from pathlib import Path

BOX_CONFIG = "/etc/vmgateway/vmgateway.toml"
"""The box's configuration: the one source of truth on a box."""
BOX_DATA_DIR = "/var/lib/vmgateway"
"""Where a box keeps its data: the unit's StateDirectory."""
TRUSTED_KEYS = Path("/etc/vmgateway/trusted-keys")
"""The public keys a box trusts to sign its releases (PEM files)."""
