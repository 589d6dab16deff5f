"""A client for NUT's network protocol (upsd, TCP 3493), just what the gateway reads.

The protocol is a few text lines (`LIST VAR <ups>` → `VAR <ups> <name> "<value>"` …), so a
small asyncio client is simpler than PyNUTClient, which is blocking, returns bytes and is
GPL-3.0-or-later.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from dataclasses import dataclass

_MAX_LINE = 4096
_MAX_VARS = 1000


class NutError(Exception):
    """upsd could not be reached or answered `ERR <code>` (e.g. DRIVER-NOT-CONNECTED, DATA-STALE)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class NutServer:
    host: str
    port: int
    ups: str
    user: str = ""
    password: str = ""


class NutClient:
    """One connection to upsd, opened on first use and again after any failure."""

    def __init__(self, server: NutServer, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def variables(self) -> dict[str, str]:
        """All the UPS's variables; raise NutError when they cannot be had."""
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: see the banned-api note in pyproject
                return await self._list_vars()
        except NutError:
            await self.close()
            raise
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            where = f"{self.server.host}:{self.server.port}"
            raise NutError(f"upsd at {where} not reachable: {exc.__class__.__name__} {exc}".strip()) from None
        except (ValueError, asyncio.LimitOverrunError) as exc:  # a line too long or badly quoted
            await self.close()
            raise NutError(f"upsd's answer could not be read: {exc}") from None

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            with contextlib.suppress(Exception):
                writer.write(b"LOGOUT\n")
                writer.close()
                await writer.wait_closed()

    async def _list_vars(self) -> dict[str, str]:
        if self._writer is None:
            await self._connect()
        ups = self.server.ups
        first = await self._command(f"LIST VAR {ups}")
        if first != f"BEGIN LIST VAR {ups}":
            raise NutError(f"upsd answered {first!r} to LIST VAR")
        found: dict[str, str] = {}
        for _ in range(_MAX_VARS):
            line = await self._line()
            if line == f"END LIST VAR {ups}":
                return found
            words = shlex.split(line)  # values are quoted, with \" and \\ escapes
            if len(words) == 4 and words[0] == "VAR" and words[1] == ups:
                found[words[2]] = words[3]
        raise NutError(f"upsd listed more than {_MAX_VARS} variables")

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.server.host, self.server.port,
                                                                   limit=_MAX_LINE)
        if self.server.user:
            for command in (f"USERNAME {self.server.user}", f"PASSWORD {self.server.password}"):
                answer = await self._command(command)
                if answer != "OK":
                    raise NutError(f"upsd refused {command.split()[0]}: {answer}")

    async def _command(self, command: str) -> str:
        assert self._writer is not None
        self._writer.write(command.encode() + b"\n")
        await self._writer.drain()
        return await self._line()

    async def _line(self) -> str:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\n")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("ERR "):
            code = line[4:].strip()
            raise NutError(f"upsd: {code} (ups {self.server.ups!r})", code)
        return line
