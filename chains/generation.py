"""Running `model.generate` off the caller's thread and streaming its text back, token by token.

One `GenerationWorker` per chat model runs generations first come first served on one
long-lived thread; a `GenerationJob` is one generation in flight. The text reaches the
caller through a sink (a queue's put), and `iter_text` / `aiter_text` read it back, cut
at the first stop string, and stop the generation when the caller stops reading.

Nothing here knows about LangChain or adapters: the chat model (`chains.llm`) says how to
hold the model for a job and how to call `generate` on it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

END = object()  # what a sink receives after the last piece of text


class TokenStreamer(BaseStreamer):
    """Hands decoded text to `sink` after every generated token.

    transformers' `TextIteratorStreamer` holds text back until a word is complete; this one
    decodes incrementally (a few tokens of left context, as text-generation-inference does)
    so the first token reaches the caller one token earlier, and holds back only an
    incomplete UTF-8 character. The prompt is skipped, special tokens are not shown.
    """

    def __init__(self, tokenizer: Any, sink: Callable[[Any], None]):
        self.tokenizer = tokenizer
        self.sink = sink
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.extend(value.reshape(-1).tolist())
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        text = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.sink(text[len(prefix) :])
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)

    def end(self) -> None:
        rest = self.tokenizer.decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        prefix = self.tokenizer.decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True
        )
        if len(rest) > len(prefix):
            self.sink(rest[len(prefix) :])
        self.sink(END)


class StopText:
    """Cuts streamed text at the first stop string, holding back a possible partial match."""

    def __init__(self, stops: Sequence[str] | None):
        self.stops = [s for s in stops or () if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self.pending = self.pending[:cut], ""
            return out
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])),
            default=0,
        )
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


class InterruptCriteria(StoppingCriteria):
    """Stops `generate` when the caller went away or a stop string appeared in the new text."""

    def __init__(self, cancel: threading.Event, tokenizer: Any, stops: list[str], prompt_len: int):
        self.cancel = cancel
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        # A token decodes to at least one character (bar special tokens), so this many
        # trailing tokens always cover the longest stop string.
        self.window = max((len(s) for s in stops), default=0) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self.cancel.is_set()
        if not stop and self.stops:
            start = max(self.prompt_len, input_ids.shape[1] - self.window)
            tail = self.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
            stop = any(s in tail for s in self.stops)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@dataclass
class GenerationJob:
    """One generation in flight: what the worker reports, and the caller's stop-string cut."""

    prompt_tokens: int
    max_new_tokens: int
    stop_text: StopText
    cancel: threading.Event = field(default_factory=threading.Event)
    streamer: TokenStreamer | None = None
    done: threading.Event = field(default_factory=threading.Event)
    output_tokens: int = 0
    started_at: float = field(default_factory=time.perf_counter)  # queued (the caller's clock)
    running_since: float | None = None  # `generate` started (after waiting for the model)
    finished_at: float | None = None
    timeout: float | None = None  # generate's max_time, if any

    def stop(self) -> None:
        """End the generation early (the caller went away, or a stop string was seen)."""
        self.cancel.set()

    @property
    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
        }

    @property
    def finish_reason(self) -> str:
        if self.stop_text.hit:
            return "stop"
        if self.output_tokens >= self.max_new_tokens:
            return "length"
        ran = (self.finished_at or 0.0) - (self.running_since or 0.0)
        if self.timeout is not None and self.running_since and ran >= self.timeout:
            return "timeout"
        return "stop"

    @property
    def first_token_s(self) -> float | None:
        first = self.streamer.first_token_at if self.streamer else None
        return first - self.started_at if first is not None else None


class GenerationWorker:
    """The one long-lived thread that runs `generate` for a chat model, first come first served.

    Not a thread per call: CUDA libraries (cuBLAS, bitsandbytes) set up state per thread,
    and a fresh thread for every generation decoded 2.7x slower than the main thread on an
    H100 (bench/results/generation-cuda.md); a thread that lives on is as fast as the main one.
    The thread holds only its queue, and ends once the worker is garbage-collected.
    """

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # The thread ends with the worker, but not at interpreter exit: a thread that ends
        # while the interpreter finalizes runs torch's thread-local destructors against torn-
        # down libraries ("terminate called without an active exception", exit code 134 in
        # 2 of 5 `python -m chains.ask` runs); a daemon thread left blocked just ends with it.
        weakref.finalize(self, self._jobs.put, None).atexit = False

    def submit(self, work: Callable[[], None]) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._jobs,), name=self.name, daemon=True
                )
                self._thread.start()
        self._jobs.put(work)

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:  # holds the queue only, never the model
        while (work := jobs.get()) is not None:
            work()

    def start(
        self,
        *,
        tokenizer: Any,
        prompt_tokens: int,
        max_new_tokens: int,
        stop: Sequence[str] | None,
        sink: Callable[[Any], None],
        hold: Callable[[], AbstractContextManager[Any]],
        generate: Callable[[Any, TokenStreamer, StoppingCriteriaList], torch.Tensor],
        timeout: float | None = None,
    ) -> GenerationJob:
        """Queue one generation; its text (then END, or an exception) goes to `sink`.

        On the worker thread, `hold()` waits for the model (its lock) and yields it, then
        `generate(model, streamer, stopping_criteria)` runs and returns the output ids.
        A job stopped before it got the model does not run at all.
        """
        stops = [s for s in stop or () if s]
        job = GenerationJob(prompt_tokens, max_new_tokens, StopText(stops), timeout=timeout)
        job.streamer = TokenStreamer(tokenizer, sink)
        criteria = StoppingCriteriaList(
            [InterruptCriteria(job.cancel, tokenizer, stops, prompt_tokens)]
        )

        def work() -> None:
            try:
                with hold() as model:
                    if job.cancel.is_set():
                        sink(END)
                        return
                    job.running_since = time.perf_counter()
                    output = generate(model, job.streamer, criteria)
                    job.output_tokens = int(output.shape[1]) - prompt_tokens
            except BaseException as error:  # handed to the caller, raised in its thread
                sink(error)
            finally:
                job.finished_at = time.perf_counter()
                job.done.set()

        self.submit(work)
        return job


# Reading a job's text back --------------------------------------------------------------


def _cut(job: GenerationJob, item: Any) -> str:
    if isinstance(item, BaseException):
        raise item
    text = job.stop_text.feed(item)
    if job.stop_text.hit:
        job.stop()
    return text


def iter_text(job: GenerationJob, get: Callable[[], Any]) -> Iterator[str]:
    """The job's text as it arrives (`get` blocks on the sink's queue), cut at stop strings.

    Ends when the generation has finished, so `job.output_tokens` is final; a caller that
    stops reading (or an error) stops the generation.
    """
    try:
        while (item := get()) is not END:
            if text := _cut(job, item):
                yield text
        if rest := job.stop_text.flush():
            yield rest
        job.done.wait()
    finally:
        job.stop()


async def aiter_text(job: GenerationJob, items: asyncio.Queue) -> AsyncIterator[str]:
    """`iter_text` for asyncio: `items` is filled from the worker thread (`async_sink`)."""
    try:
        while (item := await items.get()) is not END:
            if text := _cut(job, item):
                yield text
        if rest := job.stop_text.flush():
            yield rest
        await asyncio.to_thread(job.done.wait)
    finally:
        job.stop()


def async_sink() -> tuple[asyncio.Queue, Callable[[Any], None]]:
    """A queue for the running event loop and a sink that fills it from any thread."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()

    def sink(item: Any) -> None:
        loop.call_soon_threadsafe(items.put_nowait, item)

    return items, sink
