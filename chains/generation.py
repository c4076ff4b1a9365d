"""Running `model.generate` off the caller's thread and streaming its text back, token by token.

One `GenerationWorker` per chat model runs generations on one long-lived thread, first come
first served, batching those that wait together; a `GenerationJob` is one generation in flight. The text reaches the
caller through a sink (a queue's put), and `iter_text` / `aiter_text` read it back, cut
at the first stop string, and stop the generation when the caller stops reading.

Nothing here knows about LangChain or adapters: the chat model (`chains.llm`) says how to
hold the model for a job and how to call `generate` on it.
"""

from __future__ import annotations

import asyncio
import collections
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
    """The one long-lived thread that runs `generate` for a chat model, batching what waits.

    Not a thread per call: CUDA libraries (cuBLAS, bitsandbytes) set up state per thread,
    and a fresh thread for every generation decoded 2.7x slower than the main thread on an
    H100 (bench/results/generation-cuda.md); a thread that lives on is as fast as the main one.
    The thread holds only its queue, and ends once the worker is garbage-collected.

    Generations that wait while the model is busy run together as one batch (up to
    `max_batch` rows, left-padded): one decoding step then serves every row, so concurrent
    chats share the model instead of queueing behind each other (`bench/batching.py`). Only
    generations with the same model holder and the same decoding options share a batch, and
    with repetition penalty 1.0 (a penalty would also fall on the padding token), so a
    greedy answer is the one it would be alone. A row that stops (a stop string, EOS, its own
    max_new_tokens, the caller going away) is finished and handed back at once; the batch
    goes on with the others.
    """

    def __init__(self, name: str, max_batch: int = 1):
        self.name = name
        self.max_batch = max_batch
        self._queue: _WorkQueue = _WorkQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # The thread ends with the worker, but not at interpreter exit: a thread that ends
        # while the interpreter finalizes runs torch's thread-local destructors against torn-
        # down libraries ("terminate called without an active exception", exit code 134 in
        # 2 of 5 `python -m chains.ask` runs); a daemon thread left blocked just ends with it.
        weakref.finalize(self, self._queue.put, None).atexit = False

    def submit(self, work: Callable[[], None] | _BatchRow) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name=self.name, daemon=True
                )
                self._thread.start()
        self._queue.put(work)

    def stats(self) -> dict[str, int]:
        """Batches run so far, the generations they held, and the largest batch."""
        q = self._queue
        return {"batches": q.batches, "generations": q.rows, "largest_batch": q.largest}

    @staticmethod
    def _run(work_queue: _WorkQueue) -> None:  # holds the queue only, never the model
        while (work := work_queue.take()) is not None:
            if isinstance(work, list):
                _run_rows(work)
            else:
                work()

    def start(
        self,
        *,
        tokenizer: Any,
        inputs: dict[str, torch.Tensor],
        generate_kwargs: dict[str, Any],
        stop: Sequence[str] | None,
        sink: Callable[[Any], None],
        hold: Callable[[], AbstractContextManager[Any]],
    ) -> GenerationJob:
        """Queue one generation of `inputs` (one row); its text (then END, or an exception)
        goes to `sink`.

        On the worker thread, `hold()` waits for the model (its lock) and yields it, then
        `model.generate(**inputs, **generate_kwargs)` runs, alone or batched with others
        waiting for the same model and options. A job stopped before it got the model does
        not run at all.
        """
        stops = [s for s in stop or () if s]
        prompt_tokens = int(inputs["input_ids"].shape[1])
        job = GenerationJob(
            prompt_tokens,
            int(generate_kwargs["max_new_tokens"]),
            StopText(stops),
            timeout=generate_kwargs.get("max_time"),
        )
        job.streamer = TokenStreamer(tokenizer, sink)
        row = _BatchRow(job, tokenizer, inputs, generate_kwargs, stops, sink, hold)
        row.max_batch = self.max_batch
        self.submit(row)
        return job


class _WorkQueue:
    """FIFO of callables and rows; `take` returns a callable, or a list of rows that can share
    a batch: the first waiting row and every later one with its key, up to its max_batch."""

    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self.batches = 0  # generate calls for rows, and the rows they ran
        self.rows = 0
        self.largest = 0

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def take(self) -> Any:
        with self._ready:
            while not self._items:
                self._ready.wait()
            first = self._items.popleft()
            if not isinstance(first, _BatchRow):
                return first
            rows, rest = [first], collections.deque()
            while self._items and len(rows) < first.max_batch:
                item = self._items.popleft()
                if isinstance(item, _BatchRow) and item.key == first.key:
                    rows.append(item)
                else:
                    rest.append(item)
            self._items.extendleft(reversed(rest))
            self.batches += 1
            self.rows += len(rows)
            self.largest = max(self.largest, len(rows))
            return rows


_UNBATCHABLE = ("max_time", "max_new_tokens")  # per row, checked by _Rows


@dataclass(eq=False)
class _BatchRow:
    """One queued generation: its job, its one-row inputs and what it may share a batch on."""

    job: GenerationJob
    tokenizer: Any
    inputs: dict[str, torch.Tensor]
    kwargs: dict[str, Any]
    stops: list[str]
    sink: Callable[[Any], None]
    hold: Callable[[], AbstractContextManager[Any]]
    max_batch: int = 1
    key: Any = None

    def __post_init__(self) -> None:
        shared = {k: v for k, v in self.kwargs.items() if k not in _UNBATCHABLE}
        if float(shared.get("repetition_penalty") or 1.0) != 1.0:
            self.key = object()  # the penalty would fall on the padding too: alone
        else:
            self.key = (self.hold, tuple(sorted((k, repr(v)) for k, v in shared.items())))

    def finish(self, error: BaseException | None = None) -> None:
        job = self.job
        if job.done.is_set():
            return
        if error is not None:
            self.sink(error)
        job.finished_at = time.perf_counter()
        job.done.set()


def _run_rows(rows: list[_BatchRow]) -> None:
    """Run these rows (one `generate`, batched when more than one), each finished as it stops."""
    batch: _Rows | None = None
    try:
        with rows[0].hold() as model:
            live = []
            for row in rows:
                if row.job.cancel.is_set():  # the caller left while it waited
                    row.sink(END)
                    row.finish()
                else:
                    live.append(row)
            if len(live) == 1:
                _generate_alone(model, live[0])
            elif live:
                batch = _Rows(live)
                batch.generate(model)
    except BaseException as error:  # handed to each caller, raised in its thread
        for row in rows:
            row.finish(error)
    finally:
        if batch is not None:
            batch.end()
        for row in rows:
            row.finish()


def _generate_alone(model: Any, row: _BatchRow) -> None:
    job = row.job
    criteria = StoppingCriteriaList(
        [InterruptCriteria(job.cancel, row.tokenizer, row.stops, job.prompt_tokens)]
    )
    inputs = {k: v.to(model.device) for k, v in row.inputs.items()}
    job.running_since = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **inputs, **row.kwargs, streamer=job.streamer, stopping_criteria=criteria
        )
    job.output_tokens = int(output.shape[1]) - job.prompt_tokens


class _Rows(BaseStreamer, StoppingCriteria):
    """One batched `generate`: the streamer that hands each row's tokens to its own job, and
    the stopping criterion that ends each row on its own stop strings, max_new_tokens,
    time limit or cancel, finishing that job at once."""

    def __init__(self, rows: list[_BatchRow]):
        self.rows = rows
        self.width = max(row.job.prompt_tokens for row in rows)
        self.counts = [0] * len(rows)
        self.done = [False] * len(rows)
        self.prompt_seen = False
        eos = rows[0].tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.windows = [max((len(s) for s in row.stops), default=0) + 2 for row in rows]

    def generate(self, model: Any) -> None:
        pad = self.rows[0].kwargs.get("pad_token_id")
        pad = self.rows[0].tokenizer.pad_token_id if pad is None else pad
        ids = torch.full((len(self.rows), self.width), pad, dtype=torch.long)
        mask = torch.zeros((len(self.rows), self.width), dtype=torch.long)
        for i, row in enumerate(self.rows):  # left padding: every row's next token is at the end
            n = row.job.prompt_tokens
            ids[i, self.width - n :] = row.inputs["input_ids"][0]
            mask[i, self.width - n :] = row.inputs.get("attention_mask", torch.ones(1, n))[0]
        kwargs = {k: v for k, v in self.rows[0].kwargs.items() if k not in _UNBATCHABLE}
        kwargs["max_new_tokens"] = max(row.job.max_new_tokens for row in self.rows)
        started = time.perf_counter()
        for row in self.rows:
            row.job.running_since = started
            row.job.streamer.prompt_seen = True  # this streamer gets the rows' tokens only
        with torch.inference_mode():
            model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                **kwargs,
                streamer=self,
                stopping_criteria=StoppingCriteriaList([self]),
            )

    # BaseStreamer: the prompt first, then one token per row per step (pads once a row ended)
    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.done[i]:
                continue
            self.counts[i] += 1
            self.rows[i].job.streamer.put(torch.tensor([token]))
            if token in self.eos:
                self._finish(i)

    def end(self) -> None:
        for i in range(len(self.rows)):
            self._finish(i)

    # StoppingCriteria: called after each step's tokens were put
    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        now = time.perf_counter()
        for i, row in enumerate(self.rows):
            if not self.done[i] and self._should_stop(i, row, input_ids[i], now):
                self._finish(i)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _should_stop(self, i: int, row: _BatchRow, ids: torch.Tensor, now: float) -> bool:
        job = row.job
        if job.cancel.is_set() or self.counts[i] >= job.max_new_tokens:
            return True
        if job.timeout is not None and now - (job.running_since or now) >= job.timeout:
            return True
        if row.stops:
            start = max(self.width, ids.shape[0] - self.windows[i])
            tail = row.tokenizer.decode(ids[start:], skip_special_tokens=True)
            return any(s in tail for s in row.stops)
        return False

    def _finish(self, i: int) -> None:
        if self.done[i]:
            return
        self.done[i] = True
        row = self.rows[i]
        row.job.output_tokens = self.counts[i]
        row.job.streamer.end()  # the rest of its text, then END: its caller goes on now
        row.finish()


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
