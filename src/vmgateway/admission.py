"""Who may hold a connection on a port, decided when it is accepted — before a byte is read and
before any TLS handshake: the port's allowlist, a fair share per peer, and a cap for the port.

Why at accept: every connection costs a descriptor and memory before its first request can be
judged. Measured on a gateway that decided later: 3,000 TLS connections held open from a refused
address took 924 MB; 1,100 pushed the process past 1,024 descriptors and every new DICOM
association was aborted; 100 idle HL7 connections from one PC locked out every instrument.
With a share per peer, one misbehaving device keeps its share and the others keep theirs; with a
cap per port, no port can use up the process's descriptors.

A connection counts until its socket is closed, whoever closes it (the receiver, pynetdicom,
asyncio): counting open sockets is counting exactly the resource that runs out.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from vmgateway.logs import SayingSparingly

log = SayingSparingly(logging.getLogger(__name__))
"""Refusals of one kind on one port are said once a minute, with how many went unsaid."""


class Admission:
    """The admission rules of one port, and the connections it holds (thread-safe).

    When the port is full, a newcomer is not simply refused: if another address holds more
    connections than the newcomer's, the oldest connection of the address holding the most is
    shut down to make room. Many addresses each holding their share of idle connections would
    otherwise lock out a device that holds none; the one shut down loses nothing acknowledged.
    """

    def __init__(self, port_name: str, allowed: Callable[[str], bool], per_peer: int, total: int) -> None:
        self.port_name = port_name
        self.allowed = allowed
        self.per_peer = per_peer
        self.total = total
        self._open: dict[str, list[socket.socket]] = {}
        """By peer address, oldest first; only connections not shut down to make room."""
        self._lock = threading.Lock()

    def admit(self, peer: str, connection: socket.socket) -> bool:
        """Whether `connection` from `peer` may stay; when True it is counted until closed."""
        with self._lock:
            self._forget_closed()
            mine = len(self._open.get(peer, ()))
            evicted: str | None = None
            if not self._is_allowed(peer):
                reason = "address not allowed"
            elif mine >= self.per_peer:
                reason = "over the peer's share of connections"
            elif sum(map(len, self._open.values())) >= self.total and (evicted := self._make_room(peer, mine)) is None:
                reason = "too many connections"
            else:
                self._open.setdefault(peer, []).append(connection)
                reason = ""
        if evicted is not None:
            log.warning(f"{self.port_name} connection shut to make room: its address held the most",
                        address=evicted, total=self.total)
        if reason:
            log.warning(f"{self.port_name} connection refused: {reason}",
                        address=peer, per_peer=self.per_peer, total=self.total)
        return not reason

    def _make_room(self, newcomer: str, holds: int) -> str | None:
        """Shut the oldest connection of the address holding the most, if it holds more than
        the newcomer; the address, or None when there is no such address."""
        hog = max(self._open, key=lambda peer: len(self._open[peer]), default=None)
        if hog is None or hog == newcomer or len(self._open[hog]) <= holds:
            return None
        oldest = self._open[hog].pop(0)
        if not self._open[hog]:
            del self._open[hog]
        try:
            oldest.shutdown(socket.SHUT_RDWR)  # its owner sees the end and closes it (not us: its descriptor is in use)
        except OSError:
            pass
        return hog

    def _is_allowed(self, peer: str) -> bool:
        try:
            return self.allowed(peer)
        except ValueError:  # not an IP address (cannot happen on TCP; refuse rather than guess)
            return False

    def _forget_closed(self) -> None:
        for peer in list(self._open):
            still_open = [c for c in self._open[peer] if c.fileno() != -1]
            if still_open:
                self._open[peer] = still_open
            else:
                del self._open[peer]


class AdmittingListener(socket.socket):
    """A listening socket for asyncio servers whose accept() closes, at once, what its Admission
    refuses, and hands on only what it admits (asyncio calls accept() until it would block)."""

    admission: Admission

    @classmethod
    def bound(cls, bind: str, port: int, admission: Admission) -> AdmittingListener:
        """Bind and listen; OSError when the port is taken."""
        plain = socket.create_server((bind, port), family=socket.AF_INET6 if ":" in bind else socket.AF_INET)
        listener = cls(plain.family, plain.type, plain.proto, fileno=plain.detach())
        listener.admission = admission
        return listener

    def accept(self) -> tuple[socket.socket, object]:
        while True:
            connection, address = super().accept()
            if self.admission.admit(str(address[0]), connection):
                return connection, address
            connection.close()
