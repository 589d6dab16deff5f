"""Baseline receiver for bench/hl7_ingest.py: python-hl7's own asyncio MLLP server, nothing stored.

Parses each message and answers `create_ack()`: what the issue calls the bare, non-durable
baseline. Usage: hl7_bare_server.py PORT
"""

import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(port: int) -> None:
    async with await start_hl7_server(handle, "127.0.0.1", port) as server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
