"""Map-reduce summaries on the real model, with a small window so several map calls happen."""

from __future__ import annotations

import pytest

from chains.retrieval import Retriever
from chains.summarize import SourceNotFoundError, Summarizer

SOURCE = "part15_labelling.html"


@pytest.fixture(scope="module")
def summarizer(chat_model, corpus_collection):
    # A 640-token window forces several map groups and a reduce round on a short document.
    return Summarizer(
        chat_model, Retriever(corpus_collection), max_new_tokens=24, context_window=640
    )


def test_whole_document_is_mapped_and_reduced(summarizer, chat_model):
    from ingest.pipeline import document_text

    chunks = document_text(SOURCE, collection=summarizer.retriever.collection)
    result = summarizer.summarize_source(SOURCE)

    assert result.summary
    assert result.chunks == len(chunks) > 1
    assert [s["chunk_index"] for s in result.sources] == sorted(
        s["chunk_index"] for s in result.sources
    )
    assert {s["source"] for s in result.sources} == {SOURCE}
    assert result.levels >= 1  # the partial summaries did not fit one call
    map_calls = result.calls - result.levels
    assert map_calls >= 2
    assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0
    # every call fitted the (shrunk) window
    assert result.usage["prompt_tokens"] / result.calls + 24 <= 640


def test_short_text_is_one_call(summarizer):
    result = summarizer.summarize_text(
        "Class B digital devices must not exceed 150 microvolts/meter at 3 meters."
    )
    assert result.calls == 1 and result.levels == 0
    assert result.summary


def test_unknown_source_says_how_to_list_sources(summarizer):
    with pytest.raises(SourceNotFoundError, match="--list"):
        summarizer.summarize_source("no_such_file.pdf")


def test_nothing_to_summarize(summarizer):
    result = summarizer.summarize_chunks([])
    assert result.summary == "" and result.calls == 0


def test_window_too_small_is_a_clear_error(chat_model):
    with pytest.raises(ValueError, match="too small"):
        Summarizer(chat_model, max_new_tokens=200, context_window=300).summarize_text("text")
