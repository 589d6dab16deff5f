"""DIMSE statuses, and the one place where an error becomes one.

Every DICOM service the gateway provides (C-STORE, the worklist's C-FIND, MPPS's N-CREATE and
N-SET) runs its handler through `answering`: whatever goes wrong in it — the disk below the
watermark, a journal that cannot commit, an instance that cannot be read, a bug — is said in
the protocol with the status the standard gives for it, so the sender keeps its data and knows
whether to retry. pynetdicom does the same at its own seam, but answers every exception with
one generic failure (0xC211 for C-STORE) and logs a traceback; here the error decides.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from enum import Enum
from typing import TypeVar

from pydicom.dataset import Dataset

from vmgateway.dicom.metadata import UnreadableInstance
from vmgateway.model import Sender
from vmgateway.store import SpoolFull, StepExists, StoreUnavailable

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
# Any service (PS3.7 C)
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211
# C-STORE (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# C-FIND (PS3.4 C.4.1.1.4)
UNABLE_TO_PROCESS = 0xC001
IDENTIFIER_DOES_NOT_MATCH = 0xA900
# N-CREATE, N-SET (PS3.7 C)
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120

_COMMENT_MAX = 64
"""Error Comment (0000,0902) is LO: at most 64 characters."""


class Service(Enum):
    """What a handler answers, which decides the statuses open to it."""

    STORE = "C-STORE"
    FIND = "C-FIND"
    PROCEDURE_STEP = "N-CREATE/N-SET"


class UndecodableDataset(ValueError):
    """A query or attribute list that cannot be decoded in its presentation context's transfer syntax."""


_TRANSIENT = (StoreUnavailable, OSError, TimeoutError)
"""The gateway cannot keep its promise now (the store says so, or a received file's own I/O
failed, or a wait ran out): the sender should try again later."""


def status(code: int, comment: str = "") -> Dataset:
    """A status dataset with an Error Comment a person at the modality can read."""
    answer = Dataset()
    answer.Status = code
    if comment:
        answer.ErrorComment = comment[:_COMMENT_MAX]
    return answer


def failure(service: Service, exc: Exception) -> Dataset:
    """The status that says what `exc` means for `service`."""
    if isinstance(exc, UnreadableInstance) and service is Service.STORE:
        return status(CANNOT_UNDERSTAND, str(exc))
    if isinstance(exc, UndecodableDataset):
        return status(IDENTIFIER_DOES_NOT_MATCH if service is Service.FIND else PROCESSING_FAILURE, str(exc))
    if isinstance(exc, StepExists) and service is Service.PROCEDURE_STEP:
        return status(DUPLICATE_INSTANCE, "procedure step exists already")
    if service is Service.STORE:
        said = exc.said if isinstance(exc, StoreUnavailable) else StoreUnavailable.said
        return status(OUT_OF_RESOURCES, f"{said}, retry later")
    if service is Service.FIND:
        return status(UNABLE_TO_PROCESS, "gateway could not read its worklist, retry later")
    return status(PROCESSING_FAILURE, "gateway could not record the step, retry later")


def _report(service: Service, args: tuple[object, ...], exc: Exception) -> None:
    sender = next((arg for arg in args if isinstance(arg, Sender)), None)
    where = {"service": service.value, "calling_ae": sender.name if sender else None,
             "address": sender.address if sender else None, "error": str(exc)}
    if isinstance(exc, UnreadableInstance):
        log.warning("refused unreadable instance", extra=where)
    elif isinstance(exc, UndecodableDataset):
        log.warning("refused undecodable request", extra=where)
    elif isinstance(exc, StepExists):
        log.warning("refused procedure step: it exists already", extra=where)
    elif isinstance(exc, SpoolFull):
        log.warning("refused: disk below watermark", extra=where)
    elif isinstance(exc, _TRANSIENT):
        log.error("refused: the gateway cannot keep the promise now", extra=where)
    else:
        log.exception("refused: unexpected error in a DICOM handler", extra=where)


R = TypeVar("R")
Answer = int | Dataset


def answering(service: Service) -> Callable[[Callable[..., R]], Callable[..., R | Dataset]]:
    """Decorate a single-answer handler (C-STORE): an exception becomes the failure status.

    Handlers take the `Sender` (the calling AE and its address) among their arguments, whichever
    engine runs them: it names the sender in the log."""

    def decorate(handler: Callable[..., R]) -> Callable[..., R | Dataset]:
        @functools.wraps(handler)
        def run(*args: object) -> R | Dataset:
            try:
                return handler(*args)
            except Exception as exc:  # the seam: every error is said in the protocol
                _report(service, args, exc)
                return failure(service, exc)

        return run

    return decorate


def answering_pair(service: Service) -> Callable[[Callable[..., tuple[Answer, Dataset | None]]],
                                                 Callable[..., tuple[Answer, Dataset | None]]]:
    """As `answering`, for handlers that answer (status, dataset): N-CREATE, N-SET."""

    def decorate(handler: Callable[..., tuple[Answer, Dataset | None]]) -> Callable[..., tuple[Answer, Dataset | None]]:
        @functools.wraps(handler)
        def run(*args: object) -> tuple[Answer, Dataset | None]:
            try:
                return handler(*args)
            except Exception as exc:  # the seam
                _report(service, args, exc)
                return failure(service, exc), None

        return run

    return decorate


def answering_each(service: Service) -> Callable[[Callable[..., Iterator[tuple[Answer, Dataset | None]]]],
                                                 Callable[..., Iterator[tuple[Answer, Dataset | None]]]]:
    """As `answering`, for handlers that yield pending answers (C-FIND): an error ends them with
    the failure status."""

    def decorate(handler: Callable[..., Iterator[tuple[Answer, Dataset | None]]],
                 ) -> Callable[..., Iterator[tuple[Answer, Dataset | None]]]:
        @functools.wraps(handler)
        def run(*args: object) -> Iterator[tuple[Answer, Dataset | None]]:
            try:
                yield from handler(*args)
            except Exception as exc:  # the seam
                _report(service, args, exc)
                yield failure(service, exc), None

        return run

    return decorate
