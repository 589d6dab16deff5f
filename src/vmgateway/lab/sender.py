"""One loop per instrument: the journal's queue of order messages, oldest first, over MLLP.

A message is marked *sent* (one more attempt) before it is written, and its answer recorded when
it comes: a `kill -9` in between sends it again at the next start, with the same MSH-10. No
connection, no answer within `answer_timeout_s`, or an answer to something else: tried again
after a backoff (5 s, doubling, up to 5 minutes), counting against the message's attempts; the
messages behind it wait (an instrument must see the order before its cancellation). A refusal
(AE/AR) is the instrument's word on that message: recorded with its text, and the next goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from vmgateway.backoff import backoff
from vmgateway.config import LabConfig, LabInstrument
from vmgateway.hl7.framing import Frame, MllpDecoder, framed
from vmgateway.lab.answers import NotAnAnswer, read_answer
from vmgateway.store import Store

log = logging.getLogger(__name__)

IDLE_S = 60.0
"""How often an instrument with nothing to send looks again anyway: a queued order wakes it at once
(the store tells its listeners), so an idle box does not read the journal every second for it."""
MAX_ANSWER_BYTES = 1 << 20


class InstrumentSender:
    def __init__(self, instrument: LabInstrument, config: LabConfig, store: Store) -> None:
        self.instrument = instrument
        self.config = config
        self.store = store
        self.state: dict[str, Any] = {"state": "idle", "host": instrument.host, "port": instrument.port,
                                      "last_error": None, "last_error_at": None, "last_sent_at": None}
        self._work = asyncio.Event()
        self._failures = 0
        self._stopping = False
        self._listening = False

    def stop_starting(self) -> None:
        """A drain: send nothing new; `run` returns once a message under way is answered."""
        self._stopping = True
        self._work.set()

    async def run(self) -> None:
        if not self._listening:  # run again by the job supervisor after a failure: one listener
            loop = asyncio.get_running_loop()
            self.store.listen(lambda: self._wake(loop), "lab")
            self._listening = True
        while not self._stopping:
            self._work.clear()
            message = await self.store.lab.next_message(self.instrument.name)
            wait = IDLE_S
            if message is not None:
                wait = message.next_attempt_at - time.time()
                if wait <= 0:
                    await self._send(message.id, message.control_id, message.message)
                    continue
            try:
                async with asyncio.timeout(min(wait, IDLE_S)):
                    await self._work.wait()
            except TimeoutError:
                pass

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """From any thread: an order may have been queued."""
        loop.call_soon_threadsafe(self._work.set)

    async def _send(self, message_id: int, control_id: str, message: bytes) -> None:
        name = self.instrument.name
        await self.store.lab.sending(message_id)
        self.state.update(state="sending", last_sent_at=time.time())
        try:
            async with asyncio.timeout(self.instrument.answer_timeout_s):
                raw = await self._exchange(message)
            answer = read_answer(raw, control_id, self.instrument.charset)
        except (OSError, TimeoutError, NotAnAnswer, EOFError) as exc:
            error = self._describe(exc)
            self._failures += 1
            wait = backoff(self._failures, self.config.backoff_initial_s, self.config.backoff_max_s, jitter=True)
            dead = await self.store.lab.unanswered(message_id, error, time.time() + wait, self.config.max_attempts)
            self.state.update(state="unreachable", last_error=error, last_error_at=time.time())
            log.warning("lab order not delivered", extra={"instrument": name, "control_id": control_id,
                                                           "error": error, "retry_in_s": round(wait, 1), "dead": dead})
            return
        self._failures = 0
        await self.store.lab.answered(message_id, answer.code, answer.text)
        self.state.update(state="connected")
        level = logging.INFO if answer.code in ("AA", "CA") else logging.WARNING
        log.log(level, "lab order answered", extra={"instrument": name, "control_id": control_id,
                                                   "answer": answer.code, "text": answer.text})

    def _describe(self, exc: Exception) -> str:
        """What went wrong, as the technician at the analyzer needs to hear it."""
        where = f"{self.instrument.host}:{self.instrument.port}"
        if isinstance(exc, TimeoutError):
            return f"no answer from {where} within {self.instrument.answer_timeout_s:g} s"
        if isinstance(exc, ConnectionRefusedError):
            return f"{where} refused the connection: is the analyzer on, and its HL7 port {self.instrument.port}?"
        if isinstance(exc, OSError):
            return f"cannot reach {where}: {exc.strerror or exc}"
        return str(exc)

    async def _exchange(self, message: bytes) -> bytes:
        """One connection: the message out, its answer back."""
        reader, writer = await asyncio.open_connection(self.instrument.host, self.instrument.port)
        try:
            writer.write(framed(message))
            await writer.drain()
            decoder = MllpDecoder(MAX_ANSWER_BYTES)
            while True:
                data = await reader.read(65536)
                if not data:
                    raise EOFError("the instrument closed the connection without an answer")
                for event in decoder.feed(data):
                    if isinstance(event, Frame):
                        return bytes(event.payload)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
