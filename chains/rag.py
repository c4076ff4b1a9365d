"""The RAG chain: condense -> retrieve -> numbered context that fits -> answer with [n] citations.

    chain = RagChain(llm, Retriever())
    result = chain.invoke("What is the power limit in § 15.247?")
    for kind, payload in chain.stream(question, history):  # ("retrieved", [Source]),
        ...                                                   # ("token", str), ("done", RagResult)

When no chunk clears the relevance threshold (SCORE_THRESHOLD, on the dense cosine) the
model is not called and the result says the documents do not cover the question.
The streamed tokens are the raw model output; the final `RagResult.answer` has citation
markers that point at no listed source removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from chains.citations import clean_citations
from chains.prompts import (
    NO_ANSWER,
    RAG_STOP,
    build_condense_messages,
    build_rag_messages,
    format_source,
)
from core.settings import Settings, get_settings
from core.store import keyword_tokens

if TYPE_CHECKING:
    from chains.llm import QLoRAChatModel
    from chains.retrieval import RetrievedChunk, Retriever

log = logging.getLogger(__name__)

MIN_TRUNCATED_TOKENS = 32  # a cut chunk shorter than this is dropped instead
CONDENSE_MAX_TOKENS = 48
HISTORY_TURNS = 3  # turns of history the condensing prompt sees


@dataclass
class Source:
    n: int  # the number the model saw: [n] in the answer
    source: str | None
    page: int | None
    section: str | None
    heading: str | None
    score: float | None
    text: str
    cited: bool = False

    @classmethod
    def from_chunk(cls, n: int, chunk: RetrievedChunk) -> Source:
        return cls(
            n, chunk.source, chunk.page, chunk.section, chunk.heading, chunk.score, chunk.text
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RagResult:
    question: str
    standalone_question: str
    answer: str | None
    sources: list[Source] = field(default_factory=list)
    abstained: bool = False
    timings: dict[str, float | None] = field(default_factory=dict)
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0}
    )
    error: str | None = None
    truncated: bool = False  # lower-ranked chunks were cut or dropped to fit the context window

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [s.to_dict() for s in self.sources]
        return data


@dataclass
class _Prepared:
    """Everything before generation: what the model will see, or why it will not be called."""

    question: str
    standalone: str
    sources: list[Source]
    messages: list[dict] | None
    truncated: bool
    started: float
    timings: dict[str, float | None]
    usage: dict[str, int]
    error: str | None = None

    @property
    def abstain(self) -> bool:
        return self.error is None and self.messages is None


class RagChain:
    def __init__(
        self, llm: QLoRAChatModel | None, retriever: Retriever, settings: Settings | None = None
    ):
        self.llm = llm
        self.retriever = retriever
        self.settings = settings or get_settings()

    # Public API ------------------------------------------------------------------------

    def invoke(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        **gen: Any,
    ) -> RagResult:
        result = None
        for kind, payload in self.stream(question, history, k, mode, filters, **gen):
            if kind == "done":
                result = payload
        return result

    def stream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        **gen: Any,
    ) -> Iterator[tuple[str, Any]]:
        prepared = self._prepare(question, history, k, mode, filters, gen)
        yield "retrieved", prepared.sources
        if prepared.messages is None:
            if prepared.abstain:
                yield "token", NO_ANSWER
            yield "done", self._finish(prepared, None)
            return
        answer, generation_started, first_at = [], time.perf_counter(), None
        try:
            for chunk in self.llm.stream(prepared.messages, stop=RAG_STOP, **gen):
                if chunk.content:
                    first_at = first_at or time.perf_counter()
                    answer.append(chunk.content)
                    yield "token", chunk.content
                if chunk.usage_metadata:
                    self._add_usage(prepared.usage, chunk.usage_metadata)
        except Exception as error:  # reported in the result, like every other failure
            log.exception("Generation failed")
            prepared.error = f"Generation failed: {error}"
        self._time_generation(prepared, generation_started, first_at)
        yield "done", self._finish(prepared, "".join(answer))

    async def astream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        **gen: Any,
    ) -> AsyncIterator[tuple[str, Any]]:
        prepared = await asyncio.to_thread(self._prepare, question, history, k, mode, filters, gen)
        yield "retrieved", prepared.sources
        if prepared.messages is None:
            if prepared.abstain:
                yield "token", NO_ANSWER
            yield "done", self._finish(prepared, None)
            return
        answer, generation_started, first_at = [], time.perf_counter(), None
        try:
            async for chunk in self.llm.astream(prepared.messages, stop=RAG_STOP, **gen):
                if chunk.content:
                    first_at = first_at or time.perf_counter()
                    answer.append(chunk.content)
                    yield "token", chunk.content
                if chunk.usage_metadata:
                    self._add_usage(prepared.usage, chunk.usage_metadata)
        except Exception as error:
            log.exception("Generation failed")
            prepared.error = f"Generation failed: {error}"
        self._time_generation(prepared, generation_started, first_at)
        yield "done", self._finish(prepared, "".join(answer))

    async def ainvoke(
        self, question: str, history=None, k=None, mode=None, filters=None, **gen
    ) -> RagResult:
        result = None
        async for kind, payload in self.astream(question, history, k, mode, filters, **gen):
            if kind == "done":
                result = payload
        return result

    def retrieve_only(
        self,
        question: str,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        score_threshold: float | None = None,
    ) -> RagResult:
        """The sources the chain would use, without loading or calling the model."""
        started = time.perf_counter()
        result = RagResult(question=question, standalone_question=question, answer=None)
        try:
            chunks = self._retrieve(question, k, mode, filters, score_threshold)
        except Exception as error:
            log.exception("Retrieval failed")
            result.error = f"Retrieval failed: {error}"
            chunks = []
        elapsed = time.perf_counter() - started
        result.sources = [Source.from_chunk(n, c) for n, c in enumerate(chunks, 1)]
        result.abstained = not chunks and result.error is None
        result.timings = {"retrieve_s": elapsed, "first_token_s": None, "total_s": elapsed}
        return result

    # Steps -----------------------------------------------------------------------------

    def condense(
        self, question: str, history: Sequence[tuple[str, str]] | None
    ) -> tuple[str, dict]:
        """A standalone question for retrieval; the model is used only when there is history."""
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        history = [(u, a) for u, a in (history or []) if (u or "").strip()][-HISTORY_TURNS:]
        if not history:
            return question, usage
        if self.llm is not None:
            reply = self.llm.invoke(
                build_condense_messages(question, history),
                max_new_tokens=CONDENSE_MAX_TOKENS,
                temperature=0.0,
                stop=["\n"],
            )
            self._add_usage(usage, reply.usage_metadata or {})
            candidate = _clean_condensed(str(reply.content))
            if _usable_condensed(candidate, question, history):
                return candidate, usage
        return heuristic_standalone(question, history), usage

    def fit_context(
        self, question: str, chunks: Sequence[RetrievedChunk], max_new_tokens: int
    ) -> tuple[list[Source], list[dict], bool]:
        """Number the chunks and keep, best first, what fits in the window after the answer.

        Returns (sources the model sees, messages, truncated). Lower-ranked chunks are cut
        (at a token boundary) or dropped, never silently: `truncated` is True and it is logged.
        """
        llm = self.llm
        limit = llm.context_window - max_new_tokens
        budget = limit - llm.count_message_tokens(build_rag_messages(question, []))
        if budget <= MIN_TRUNCATED_TOKENS:
            raise ValueError(
                f"The question leaves no room for sources in the {llm.context_window}-token context "
                f"window with max_new_tokens={max_new_tokens}: shorten the question or lower max_new_tokens."
            )
        sources: list[Source] = []
        used, truncated = 0, False
        for n, chunk in enumerate(chunks, 1):
            source = Source.from_chunk(n, chunk)
            cost = llm.count_tokens(format_source(source)) + 2  # + the blank line between entries
            if used + cost <= budget:
                sources.append(source)
                used += cost
                continue
            truncated = True
            room = budget - used - (cost - llm.count_tokens(source.text)) - 4
            if room >= MIN_TRUNCATED_TOKENS:
                sources.append(replace(source, text=self._cut_tokens(source.text, room)))
            break
        messages = build_rag_messages(question, sources)
        # Token counts of the parts and of the whole can differ by a few at the joins.
        while sources and llm.count_message_tokens(messages) > limit:
            truncated = True
            last = sources[-1]
            keep = llm.count_tokens(last.text) - 16
            if keep >= MIN_TRUNCATED_TOKENS:
                sources[-1] = replace(last, text=self._cut_tokens(last.text, keep))
            else:
                sources.pop()
            messages = build_rag_messages(question, sources)
        if truncated:
            log.info(
                "Context cut to fit %d tokens: %d of %d retrieved chunks kept (lowest-ranked "
                "dropped or shortened).",
                limit,
                len(sources),
                len(chunks),
            )
        return sources, messages, truncated

    # Internals ---------------------------------------------------------------------------

    def _retrieve(self, query, k, mode, filters, score_threshold=None) -> list[RetrievedChunk]:
        threshold = self.settings.score_threshold if score_threshold is None else score_threshold
        return self.retriever.search(
            query,
            k=k or self.settings.retrieval_k,
            mode=mode or self.settings.retrieval_mode,
            filters=filters,
            score_threshold=threshold if threshold > 0 else None,
        )

    def _prepare(self, question, history, k, mode, filters, gen) -> _Prepared:
        started = time.perf_counter()
        question = (question or "").strip()
        prepared = _Prepared(
            question,
            question,
            [],
            None,
            False,
            started,
            {"condense_s": 0.0, "retrieve_s": 0.0, "first_token_s": None, "total_s": 0.0},
            {"prompt_tokens": 0, "completion_tokens": 0},
        )
        if not question:
            prepared.error = "The question is empty: ask something about the indexed documents."
            return prepared
        if self.llm is None:
            prepared.error = (
                "No language model is loaded (this chain was built for retrieval only)."
            )
            return prepared
        try:
            prepared.standalone, usage = self.condense(question, history)
            self._add_usage(prepared.usage, usage)
            condensed_at = time.perf_counter()
            prepared.timings["condense_s"] = condensed_at - started
            chunks = self._retrieve(prepared.standalone, k, mode, filters)
            prepared.timings["retrieve_s"] = time.perf_counter() - condensed_at
            if not chunks:
                return prepared  # abstain: nothing relevant, the model is not called
            max_new_tokens = gen.get("max_new_tokens") or self.llm.max_new_tokens
            prepared.sources, prepared.messages, prepared.truncated = self.fit_context(
                prepared.standalone, chunks, max_new_tokens
            )
        except Exception as error:
            log.exception("RAG preparation failed")
            prepared.error = str(error)
            prepared.messages = None
        return prepared

    def _time_generation(self, prepared: _Prepared, started: float, first_at: float | None) -> None:
        ended = time.perf_counter()
        if first_at is not None:
            prepared.timings["first_token_s"] = first_at - prepared.started
            prepared.timings["prefill_s"] = first_at - started
            prepared.timings["decode_s"] = ended - first_at
        prepared.timings["generate_s"] = ended - started

    def _finish(self, prepared: _Prepared, answer: str | None) -> RagResult:
        prepared.timings["total_s"] = time.perf_counter() - prepared.started
        result = RagResult(
            question=prepared.question,
            standalone_question=prepared.standalone,
            answer=answer,
            sources=prepared.sources,
            timings=prepared.timings,
            usage=prepared.usage,
            error=prepared.error,
            truncated=prepared.truncated,
        )
        if prepared.abstain:
            result.answer, result.abstained = NO_ANSWER, True
        elif answer is not None:
            result.answer, result.sources = apply_citations(answer, prepared.sources)
        return result

    def _cut_tokens(self, text: str, max_tokens: int) -> str:
        tokenizer = self.llm.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return tokenizer.decode(ids[: max(max_tokens - 1, 1)]).rstrip() + " …"

    @staticmethod
    def _add_usage(total: dict[str, int], usage: dict) -> None:
        total["prompt_tokens"] += int(usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0)
        total["completion_tokens"] += int(
            usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
        )


def apply_citations(answer: str, sources: Sequence[Source]) -> tuple[str, list[Source]]:
    """Drop markers that point at no source; return (answer, the cited sources, cited=True).

    Without any valid citation, every source the model was given comes back, cited=False.
    """
    cleaned = clean_citations(answer, max((s.n for s in sources), default=0))
    if cleaned.dropped:
        log.info("Dropped citation markers pointing at no source: %s", cleaned.dropped)
    if not cleaned.cited:
        return cleaned.text.strip(), [replace(s, cited=False) for s in sources]
    return cleaned.text.strip(), [replace(s, cited=True) for s in sources if s.n in cleaned.cited]


# Follow-up condensation helpers ------------------------------------------------------------------


def _clean_condensed(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(standalone question|question)\s*:\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"').strip()


def _usable_condensed(candidate: str, question: str, history: Sequence[tuple[str, str]]) -> bool:
    """A rewrite is kept only if it is a short question about the conversation's terms."""
    words = candidate.split()
    if not 2 <= len(words) <= 40:
        return False
    known = set(keyword_tokens(question)) | {t for user, _ in history for t in keyword_tokens(user)}
    return bool(set(keyword_tokens(candidate)) & known)


def heuristic_standalone(question: str, history: Sequence[tuple[str, str]]) -> str:
    """The follow-up plus the key terms of the previous questions it does not repeat."""
    seen = set(keyword_tokens(question))
    terms: list[str] = []
    for user, _ in reversed(history):
        for term in keyword_tokens(user):
            if term not in seen and len(term) > 2:
                seen.add(term)
                terms.append(term)
    return f"{question} ({' '.join(terms[:8])})" if terms else question
