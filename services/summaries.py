"""Summaries for every caller: `POST /api/summarize`, the chat's "Summarize sources" and
`fcc-rag summarize` all go through these functions (the summarizer itself is
`chains.summarize`: provisions quoted with their pinpoints, the model's condensed sentences
only where the verifier keeps them, every line citing a numbered passage).

A summary that calls the model holds a slot of `services.admission.answer_slots` like an
answer (a full queue is a `ServerBusyError`); an extractive one does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chains.summarize import SUMMARY_MODES, SourceNotFoundError
from services.admission import answer_slots
from services.documents import AmbiguousDocumentError, resolve_root

if TYPE_CHECKING:
    from chains.summarize import SummaryResult

__all__ = [
    "SUMMARY_MODES",
    "AmbiguousDocumentError",
    "SourceNotFoundError",
    "response_payload",
    "summarize_answer_sources",
    "summarize_async",
    "summarize_query",
    "summarize_source",
]


def _assistant():
    from services.assistant import get_assistant

    return get_assistant()


def _mode(mode: str | None) -> str:
    mode = mode or _assistant().settings.summary_mode
    if mode not in SUMMARY_MODES:
        raise ValueError(f"Unknown summary mode {mode!r}; use one of {', '.join(SUMMARY_MODES)}")
    return mode


def _slot(mode: str):
    """An answer slot for a summary that runs the model; none for quotes only."""
    if mode == "extractive":
        return _NoSlot()
    return answer_slots.acquire()


class _NoSlot:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def chosen_root(source: str, root: str | None, collection: str | None = None) -> str | None:
    """The ingest root (as the chunks record it) whose copy of `source` to summarize.

    `root`: a folder or `uploads` / `corpus`; needed only when the name is indexed under
    several roots (AmbiguousDocumentError). SourceNotFoundError when it is not indexed there.
    """
    from ingest.pipeline import document_text

    assistant = _assistant()
    retriever = assistant.retriever(collection)
    chunks = document_text(source, collection=retriever.collection, settings=retriever.settings)
    roots = sorted({r for c in chunks if (r := (c.get("metadata") or {}).get("root"))})
    if root is None:
        if len(roots) > 1:
            raise AmbiguousDocumentError(source, roots)
        return None  # every chunk (one root, or none recorded)
    wanted = resolve_root(root)
    for found in roots:
        if Path(found).resolve().as_posix() == wanted:
            return found
    raise SourceNotFoundError(
        f"No chunks of {source!r} under root {root!r} in collection {retriever.collection!r}"
        + (f"; it is indexed under {', '.join(roots)}." if roots else ".")
        + " GET /api/documents lists the documents."
    )


def summarize_source(
    source: str,
    root: str | None = None,
    mode: str | None = None,
    collection: str | None = None,
    max_new_tokens: int | None = None,
) -> SummaryResult:
    """Summarize one indexed document (`mode`: verified | extractive | raw, default
    SUMMARY_MODE). Raises SourceNotFoundError, AmbiguousDocumentError, ServerBusyError."""
    mode = _mode(mode)
    found_root = chosen_root(source, root, collection)
    with _slot(mode):
        summarizer = _assistant().summarizer(collection, mode=mode, max_new_tokens=max_new_tokens)
        return summarizer.summarize_source(source, root=found_root)


async def summarize_async(
    source: str,
    root: str | None = None,
    mode: str | None = None,
    collection: str | None = None,
) -> SummaryResult:
    """`summarize_source` for async callers: the slot is taken at once (a full queue is a
    ServerBusyError before anything runs), the work runs on a worker thread."""
    mode = _mode(mode)
    with _slot(mode):
        found_root = await asyncio.to_thread(chosen_root, source, root, collection)

        def run() -> SummaryResult:
            summarizer = _assistant().summarizer(collection, mode=mode)
            return summarizer.summarize_source(source, root=found_root)

        return await asyncio.to_thread(run)


def summarize_query(
    query: str,
    k: int = 8,
    mode: str | None = None,
    collection: str | None = None,
    max_new_tokens: int | None = None,
) -> SummaryResult:
    """Summarize what retrieval finds for `query`, with regard to it."""
    mode = _mode(mode)
    with _slot(mode):
        summarizer = _assistant().summarizer(collection, mode=mode, max_new_tokens=max_new_tokens)
        return summarizer.summarize_query(query, k=k)


def _answer_chunks(sources: Sequence[Any], collection: str | None) -> list[Any]:
    """The indexed chunks an answer's passages were cut from, in document order; a chunk no
    longer indexed is rebuilt from the passage's own record (its chunk text, pinpoint)."""
    from ingest.pipeline import document_text

    retriever = _assistant().retriever(collection)
    wanted = {str(getattr(s, "chunk_id", None)) for s in sources if getattr(s, "chunk_id", None)}
    chunks: list[Any] = []
    found: set[str] = set()
    for name in dict.fromkeys(getattr(s, "source", None) for s in sources):
        if not name:
            continue
        for chunk in document_text(
            name, collection=retriever.collection, settings=retriever.settings
        ):
            if str(chunk.get("id")) in wanted and str(chunk.get("id")) not in found:
                chunks.append(chunk)
                found.add(str(chunk.get("id")))
    for source in sources:
        chunk_id = str(getattr(source, "chunk_id", None) or "")
        if chunk_id and chunk_id in found:
            continue
        found.add(chunk_id)
        chunks.append(
            {
                "id": chunk_id or None,
                "text": getattr(source, "context", None) or getattr(source, "text", ""),
                "metadata": {
                    "source": getattr(source, "source", None),
                    "page": getattr(source, "page", None),
                    "section": getattr(source, "section", None),
                    "heading": getattr(source, "heading", None),
                },
            }
        )
    return chunks


def summarize_answer_sources(
    sources: Sequence[Any],
    focus: str | None = None,
    mode: str | None = None,
    collection: str | None = None,
) -> SummaryResult:
    """The chat's "Summarize sources": the chunks an answer's passages come from, summarized
    with regard to its question (`focus`), cited like an answer."""
    mode = _mode(mode)
    with _slot(mode):
        chunks = _answer_chunks(sources, collection)
        summarizer = _assistant().summarizer(collection, mode=mode)
        return summarizer.summarize_chunks(chunks, focus=focus)


def response_payload(result: SummaryResult, source: str | None = None) -> dict[str, Any]:
    """What `POST /api/summarize` returns."""
    return {
        "source": source,
        "mode": result.mode,
        "summary": result.summary,
        "sources": result.sources,
        "dropped": result.dropped,
        "fallback": result.fallback,
        "sentences": result.sentences,
        "timings": result.timings,
        "chunks": result.chunks,
        "calls": result.calls,
        "levels": result.levels,
        "usage": result.usage,
    }
