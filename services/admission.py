"""A bound on answers waiting for or in generation, so a burst gets told to retry, not queued forever.

Every answer (API, OpenAI endpoint, chat) takes a slot before it is retrieved and gives it
back when it ends, however it ends. Past `MAX_PENDING_ANSWERS` a request is refused at once
with `ServerBusyError` (a 429 with Retry-After in the API): with one model decoding for
everybody, a request queued behind hundreds of others would time out in the client anyway,
and every queued one holds memory and a connection.

Retry-After is the mean time an answer has held its slot lately: about when the oldest
one ends and a slot frees.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from core.settings import get_settings

# Weight of the newest answer in the running mean of how long answers take.
MEAN_WEIGHT = 0.2
DEFAULT_RETRY_AFTER_S = 5


class ServerBusyError(RuntimeError):
    """Too many answers are pending; `retry_after_s` says when to try again."""

    def __init__(self, pending: int, retry_after_s: int):
        self.pending = pending
        self.retry_after_s = retry_after_s
        super().__init__(
            f"The assistant is busy: {pending} answers are pending (MAX_PENDING_ANSWERS). "
            f"Retry in about {retry_after_s} s."
        )


@dataclass
class Slot:
    """One answer's place; `release` is idempotent (stream ends, errors and GC may all call it)."""

    owner: AnswerSlots
    taken_at: float = field(default_factory=time.monotonic)
    released: bool = False

    def release(self) -> None:
        self.owner._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class AnswerSlots:
    def __init__(self, limit: int | None = None):
        self._limit = limit
        self._pending = 0
        self._mean_s: float | None = None
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self._limit if self._limit is not None else get_settings().max_pending_answers

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after_s(self) -> int:
        if self._mean_s is None:
            return DEFAULT_RETRY_AFTER_S
        return max(1, math.ceil(self._mean_s))

    def acquire(self) -> Slot:
        with self._lock:
            if self._pending >= self.limit:
                raise ServerBusyError(self._pending, self.retry_after_s())
            self._pending += 1
        return Slot(self)

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._pending -= 1
            held = time.monotonic() - slot.taken_at
            self._mean_s = (
                held
                if self._mean_s is None
                else (1 - MEAN_WEIGHT) * self._mean_s + MEAN_WEIGHT * held
            )

    def status(self) -> dict[str, float | int | None]:
        return {
            "pending": self._pending,
            "limit": self.limit,
            "mean_answer_s": round(self._mean_s, 2) if self._mean_s is not None else None,
        }


answer_slots = AnswerSlots()
