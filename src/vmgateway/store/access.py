"""API tokens and the gateway's switches (e.g. whether transfers are active), in the journal.

A token is 256 random bits shown once; only its SHA-256 is kept. With that much entropy a
plain hash is as good as a slow password hash, and checking it costs microseconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable

from vmgateway.records import Holder, Scope, TokenInfo
from vmgateway.store.journal import Journal, Write


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenExists(Exception):
    """A token with that name exists (revoked or not): names stay unique for the audit trail."""


class TokenRefused(ValueError):
    """A token given from outside (`--from-file`) that is too weak or malformed."""


MIN_GIVEN_TOKEN_LENGTH = 32
_GIVEN_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


TOKEN_PREFIX = "vmg_"


def new_token() -> str:
    # The prefix: a token never starts with "-" (which a command line would take for an option,
    # as `--token -x…` once did in a test), and a leaked one is recognisable by secret scanners.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_given_token(token: str) -> str:
    """A token chosen elsewhere (Vetmanager's monitoring token): long enough to be unguessable and
    sendable as it is in an Authorization header; TokenRefused saying what is wrong."""
    if len(token) < MIN_GIVEN_TOKEN_LENGTH:
        raise TokenRefused(f"a token needs at least {MIN_GIVEN_TOKEN_LENGTH} characters, this one has {len(token)}")
    if not _GIVEN_TOKEN.match(token) or token.startswith("-"):
        raise TokenRefused("a token uses letters, digits and . _ ~ + / = - only, and does not start with -")
    return token


def create_token(name: str, at: float, scope: Scope = "all", token: str | None = None) -> tuple[str, Write[None]]:
    """The token (new unless given) and the write that records its hash."""
    token = token or new_token()

    def write(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("INSERT INTO api_tokens (name, sha256, created_at, scope) VALUES (?, ?, ?, ?)",
                         (name, token_hash(token), at, scope))
        except sqlite3.IntegrityError as exc:
            if "api_tokens.name" in str(exc):
                raise TokenExists(f"a token named {name!r} exists already") from None
            raise TokenExists("that token is held already, under another name") from None

    return token, write


def revoke_token(name: str, at: float) -> Write[bool]:
    def write(conn: sqlite3.Connection) -> bool:
        cursor = conn.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (at, name)
        )
        return cursor.rowcount == 1

    return write


def list_tokens(conn: sqlite3.Connection) -> list[TokenInfo]:
    rows = conn.execute("SELECT name, created_at, revoked_at, last_used_at, scope FROM api_tokens ORDER BY name")
    return [TokenInfo(*row) for row in rows]


def token_holder(conn: sqlite3.Connection, token: str) -> Holder | None:
    """Who holds the valid (not revoked) token, or None."""
    row = conn.execute(
        "SELECT name, scope FROM api_tokens WHERE sha256 = ? AND revoked_at IS NULL", (token_hash(token),)
    ).fetchone()
    return Holder(str(row[0]), row[1]) if row else None


TRANSFERS_ACTIVE = "transfers_active"
"""Setting: "true" while Vetmanager has switched transfers on (pull feed and push alike)."""
TRANSFERS_FIRST_ACTIVATED_AT = "transfers.first_activated_at"
"""Setting: when transfers were first switched on; commissioning ends then."""
SITE_PACS = "site.pacs"
"""Setting once: the PACS as changed through the API (JSON). Moved into remote-settings.toml at
the first start of a gateway that keeps remote changes there (vmgateway.remote_settings)."""
SITE_CONTACT = "site.contact"
"""Setting once: the clinic's contact person as changed through the API (JSON); moved likewise."""
HEALTH_CHECKED_AT = "health.deep_checked_at"
"""Setting: when a deep health check last had the journal take a write."""
GATEWAY_ID = "gateway_id"
"""Setting: this box's identity, made at first start; part of every idempotency key."""


def transfers_active(conn: sqlite3.Connection) -> bool:
    return get_setting(conn, TRANSFERS_ACTIVE, "false") == "true"


def commissioned(conn: sqlite3.Connection) -> bool:
    """Whether transfers were ever activated (boxes activated before this was recorded: if active now)."""
    return get_setting(conn, TRANSFERS_FIRST_ACTIVATED_AT, "") != "" or transfers_active(conn)


def switch_transfers(active: bool, now: float) -> Write[None]:
    """The switch; the first activation is kept for good (the box is commissioned from then on)."""

    def write(conn: sqlite3.Connection) -> None:
        set_setting(TRANSFERS_ACTIVE, "true" if active else "false")(conn)
        if active:
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                         (TRANSFERS_FIRST_ACTIVATED_AT, str(now)))

    return write


def claim_gateway_id(candidate: str) -> Write[str]:
    """Keep `candidate` as the gateway's identity unless it has one; return the identity."""

    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                     (GATEWAY_ID, candidate))
        return get_setting(conn, GATEWAY_ID, candidate)

    return write


def get_setting(conn: sqlite3.Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def forget_setting(key: str) -> Write[None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM settings WHERE key = ?", (key,))

    return write


def set_setting(key: str, value: str) -> Write[None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    return write


class Tokens:
    """API tokens: made and revoked by `vmgateway token` (no event loop), checked by the API."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def create(self, name: str, scope: Scope = "all", token: str | None = None) -> str:
        """A new token (shown once), or the one given; raises TokenExists."""
        token, write = create_token(name, time.time(), scope, token)
        self._journal.write(write)
        return token

    def revoke(self, name: str) -> bool:
        return self._journal.write(revoke_token(name, time.time()))

    def list(self) -> list[TokenInfo]:
        return self._journal.read(list_tokens)

    async def holder(self, token: str) -> Holder | None:
        """Who holds the valid token, or None."""
        return await self._journal.read_async(lambda conn: token_holder(conn, token))


class KeptSettings:
    """What was set through the API and must outlive restarts: the transfers switch, the
    contact person and the PACS as changed, the box's identity."""

    def __init__(self, journal: Journal, switched: Callable[[], None]) -> None:
        self._journal = journal
        self._switched = switched

    async def transfers_active(self) -> bool:
        return await self._journal.read_async(transfers_active)

    async def switch_transfers(self, active: bool) -> None:
        await self._journal.write_async(switch_transfers(active, time.time()))
        self._switched()

    async def commissioned(self) -> bool:
        return await self._journal.read_async(commissioned)

    async def get(self, key: str, default: str) -> str:
        return await self._journal.read_async(lambda conn: get_setting(conn, key, default))

    async def put(self, key: str, value: str) -> None:
        """Set `key`; returns once committed (fsync'ed)."""
        await self._journal.write_async(set_setting(key, value))

    async def forget(self, key: str) -> None:
        await self._journal.write_async(forget_setting(key))

    async def gateway_id(self) -> str:
        """This box's identity (made once, kept in the journal)."""
        return await self._journal.write_async(claim_gateway_id(str(uuid.uuid4())))
