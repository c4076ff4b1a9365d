"""Map-reduce summaries within the model's context window.

A whole document (its chunks in order), a set of retrieved chunks, or any long text:
map = each group of consecutive pieces that fits the window -> a partial summary;
reduce = partial summaries combined, again in groups that fit, until one is left.

The command line is `fcc-rag summarize` (cli/summarize.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from chains.prompts import build_combine_messages, build_summary_messages

if TYPE_CHECKING:
    from chains.llm import QLoRAChatModel
    from chains.retrieval import Retriever

log = logging.getLogger(__name__)

MAX_LEVELS = 8  # reduce rounds; each round at least halves the number of summaries


class SourceNotFoundError(ValueError):
    """The source has no chunks in the collection; the message says how to list them."""


@dataclass
class SummaryResult:
    summary: str
    sources: list[dict] = field(default_factory=list)  # {source, page, section, chunk_index}
    chunks: int = 0  # pieces of input
    calls: int = 0  # model calls (map + reduce)
    levels: int = 0  # reduce rounds after the map
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0}
    )
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(chunk: Any, name: str) -> Any:
    if isinstance(chunk, dict):
        return chunk.get(name, (chunk.get("metadata") or {}).get(name))
    return getattr(chunk, name, None)


class Summarizer:
    def __init__(
        self,
        llm: QLoRAChatModel,
        retriever: Retriever | None = None,
        max_new_tokens: int | None = None,
        context_window: int | None = None,
    ):
        """`context_window` may only shrink the model's window (less memory and latency per call)."""
        self.llm = llm
        self.retriever = retriever
        self.max_new_tokens = max_new_tokens or llm.max_new_tokens
        self.context_window = min(context_window or llm.context_window, llm.context_window)

    # Entry points -------------------------------------------------------------------------

    def summarize_source(self, source: str, focus: str | None = None) -> SummaryResult:
        """Summarize one ingested document, reading its chunks in order."""
        from ingest.pipeline import document_text

        collection = self.retriever.collection if self.retriever else None
        settings = self.retriever.settings if self.retriever else None
        chunks = document_text(source, collection=collection, settings=settings)
        if not chunks:
            raise SourceNotFoundError(
                f"No chunks of {source!r} in collection {collection or '(default)'}. Sources are "
                "paths relative to the ingest root, e.g. 'kdb_447498_rf_exposure.pdf'; list them "
                "with `fcc-rag summarize --list` (or GET /api/documents)."
            )
        return self.summarize_chunks(chunks, focus=focus)

    def summarize_query(self, query: str, k: int = 8, mode: str | None = None) -> SummaryResult:
        """Summarize what the retriever finds for a query, with regard to that query."""
        chunks = self.retriever.search(query, k=k, mode=mode)
        return self.summarize_chunks(chunks, focus=query)

    def summarize_chunks(self, chunks: Sequence[Any], focus: str | None = None) -> SummaryResult:
        """Chunks are RetrievedChunk objects or their dicts (`document_text` rows)."""
        texts = [str(_field(c, "text") or "") for c in chunks]
        result = self.summarize_pieces([t for t in texts if t.strip()], focus)
        result.sources = [
            {name: _field(c, name) for name in ("source", "page", "section", "chunk_index")}
            for c in chunks
        ]
        return result

    def summarize_text(self, text: str, focus: str | None = None) -> SummaryResult:
        """A long text (e.g. a long answer): split by tokens where needed, then map-reduce."""
        return self.summarize_pieces([text], focus)

    # Map-reduce ---------------------------------------------------------------------------

    def summarize_pieces(self, pieces: Sequence[str], focus: str | None = None) -> SummaryResult:
        started = time.perf_counter()
        result = SummaryResult(summary="", chunks=len(pieces))
        if not pieces:
            result.seconds = time.perf_counter() - started
            return result
        budget = self._budget(build_summary_messages("", focus))
        groups = self._pack(self._split_long(pieces, budget), budget)
        summaries = [
            self._call(build_summary_messages("\n\n".join(g), focus), result) for g in groups
        ]
        combine_budget = self._budget(build_combine_messages([], focus))
        while len(summaries) > 1:
            if result.levels >= MAX_LEVELS:
                raise RuntimeError(
                    "Summaries do not shrink: raise the context window or lower max_new_tokens."
                )
            result.levels += 1
            groups = self._pack(self._split_long(summaries, combine_budget), combine_budget)
            if len(groups) == len(
                summaries
            ):  # nothing fits together: merge pairs anyway, cut to fit
                groups = [summaries[i : i + 2] for i in range(0, len(summaries), 2)]
            summaries = [
                self._call(build_combine_messages(g, focus), result) if len(g) > 1 else g[0]
                for g in groups
            ]
        result.summary = summaries[0].strip()
        result.seconds = time.perf_counter() - started
        return result

    def _budget(self, empty_messages: list[dict]) -> int:
        """Tokens left for text after the prompt around it and the summary to generate."""
        overhead = self.llm.count_message_tokens(empty_messages) + 8
        budget = self.context_window - self.max_new_tokens - overhead
        if budget < 2 * self.max_new_tokens:
            raise ValueError(
                f"The context window ({self.context_window} tokens) is too small to summarize with "
                f"max_new_tokens={self.max_new_tokens}: lower max_new_tokens."
            )
        return budget

    def _split_long(self, pieces: Sequence[str], budget: int) -> list[str]:
        """Pieces longer than the budget are split at token boundaries."""
        tokenizer = self.llm.tokenizer
        out: list[str] = []
        for piece in pieces:
            ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            if len(ids) <= budget:
                out.append(piece)
                continue
            out.extend(tokenizer.decode(ids[i : i + budget]) for i in range(0, len(ids), budget))
        return out

    def _pack(self, pieces: Sequence[str], budget: int) -> list[list[str]]:
        """Consecutive pieces grouped greedily so each group fits the budget."""
        groups: list[list[str]] = []
        used = budget + 1
        for piece in pieces:
            cost = self.llm.count_tokens(piece) + 2
            if used + cost > budget:
                groups.append([])
                used = 0
            groups[-1].append(piece)
            used += cost
        return groups

    def _call(self, messages: list[dict], result: SummaryResult) -> str:
        reply = self.llm.invoke(messages, max_new_tokens=self.max_new_tokens)
        usage = reply.usage_metadata or {}
        result.calls += 1
        result.usage["prompt_tokens"] += usage.get("input_tokens", 0)
        result.usage["completion_tokens"] += usage.get("output_tokens", 0)
        return str(reply.content).strip()


if __name__ == "__main__":  # `python -m chains.summarize`: the command is cli/summarize.py
    import runpy

    runpy.run_module("cli.summarize", run_name="__main__", alter_sys=True)
