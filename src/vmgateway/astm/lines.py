"""The two kinds of line an instrument is on, behind one small interface: TCP, and a serial
port. E1381 runs the same over both (astm/receiver.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

import serial

from vmgateway.config import AstmSerialPort

_READ_SIZE = 65536


class Line(Protocol):
    async def read(self) -> bytes:
        """The next bytes; b"" when the line is gone."""
        ...

    async def write(self, data: bytes) -> None: ...


class TcpLine:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(_READ_SIZE)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class SerialLine:
    """pyserial is blocking: a thread reads and hands bytes to the event loop through a queue,
    so a read the loop gives up on (a timeout) loses nothing — the bytes wait in the queue."""

    POLL_S = 0.2

    def __init__(self, config: AstmSerialPort) -> None:
        self.port = serial.Serial(config.device, baudrate=config.baudrate, bytesize=config.bytesize,
                                  parity=config.parity, stopbits=config.stopbits, timeout=self.POLL_S)
        self._received: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"astm-{config.name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError, TypeError):
                data, gone = b"", True
            else:
                gone = False
            if data or gone:
                self._loop.call_soon_threadsafe(self._received.put_nowait, data)
            if gone:
                return

    async def read(self) -> bytes:
        return await self._received.get()

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.port.write, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.port.close()
