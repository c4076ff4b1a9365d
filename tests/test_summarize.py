"""Map-reduce summaries on the real model, with a small window so several map calls happen."""

from __future__ import annotations

import re

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


@pytest.fixture(scope="module")
def mapped(summarizer):
    """The small-window summary of SOURCE (several map steps, a reduce round), made once."""
    return summarizer.summarize_source(SOURCE)


def test_whole_document_is_mapped_and_reduced(summarizer, chat_model, mapped):
    from ingest.pipeline import document_text

    chunks = document_text(SOURCE, collection=summarizer.retriever.collection)
    result = mapped

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


# Verified summaries: cited, checked, no repeats -------------------------------------------------

NUMBERED_LINE = re.compile(r"^(§ [^:]+|[^:]+): .+ \[(\d+)\]$")


def assert_trustworthy(result) -> None:
    """Every line cites a valid [n]; every number is in the passage it cites (or its
    pinpoint); every line is backed by its passage; nothing repeats."""
    from evals import metrics
    from evals.summaries import repeated_sentences, without_pinpoints

    assert result.summary
    numbers = [s["n"] for s in result.sources]
    assert numbers == list(range(1, len(numbers) + 1)) and all(s["cited"] for s in result.sources)
    by_n = {s["n"]: s for s in result.sources}
    for line in result.summary.splitlines():
        match = NUMBERED_LINE.match(line)
        assert match, line
        assert int(match.group(2)) in by_n, line
        source = by_n[int(match.group(2))]
        assert line.startswith(source["pinpoint"] + ": "), (line, source["pinpoint"])
    texts = [s["text"] for s in result.sources]
    labels = [s["pinpoint"] for s in result.sources]
    claims = without_pinpoints(result.summary, labels)
    backed = metrics.cited_support(claims, texts, "", labels)
    assert backed["uncited_numbers"] == [], backed
    assert backed["supported_sentence_rate"] == 1.0, result.summary
    assert repeated_sentences(claims) == 0, result.summary
    assert all(d.get("reason") for d in result.dropped)


@pytest.fixture(scope="module")
def verified(chat_model, corpus_collection):
    return Summarizer(chat_model, Retriever(corpus_collection))


def test_a_verified_summary_quotes_provisions_with_pinpoints_and_checks_the_model(verified):
    result = verified.summarize_source("part15_conducted_limits.txt")
    assert result.mode == "verified" and result.calls == 1  # one condensing call, verified
    assert_trustworthy(result)
    assert "§ 15.107(a)" in result.summary and "150 kHz to 30 MHz" in result.summary
    assert result.sources[0]["source"] == "part15_conducted_limits.txt"
    assert result.sources[0]["context"]  # the chunk, for the chat's highlighted source card
    assert set(result.timings) >= {"extract_s", "generate_s", "verify_s", "total_s"}
    if result.fallback:  # nothing the model wrote survived: quotes only, and it says why
        assert result.dropped and all(s["kind"] == "quote" for s in result.sentences)


def test_map_reduce_is_verified_after_every_step(mapped):
    """The small window: several map steps and a reduce round, each condensing call
    verified; the merged summary still cites only what its passages hold."""
    result = mapped
    assert result.mode == "verified" and result.levels >= 1
    assert result.calls >= 2
    assert_trustworthy(result)
    assert result.sources and {s["source"] for s in result.sources} == {SOURCE}


def test_raw_mode_is_the_models_text_uncited(chat_model, corpus_collection):
    raw = Summarizer(chat_model, Retriever(corpus_collection), max_new_tokens=24, mode="raw")
    result = raw.summarize_text("Class B digital devices must not exceed 150 microvolts/meter.")
    assert result.mode == "raw" and result.calls == 1 and result.summary
    assert result.sources == [] and result.dropped == []


def test_extractive_mode_needs_no_model(corpus_collection):
    quotes = Summarizer(None, Retriever(corpus_collection), mode="extractive")
    result = quotes.summarize_source("part15_247_spread_spectrum.html")
    assert result.mode == "extractive" and result.calls == 0 and result.fallback
    assert_trustworthy(result)
    assert "§ 15.247" in result.summary


class _ScriptedModel:
    """A stand-in for the chat model that drafts a fixed text, to show what the verifier does
    with a wrong number, a paraphrase and a faithful shortening."""

    context_window = 2048
    max_new_tokens = 40

    def __init__(self, draft: str):
        self.draft = draft

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_message_tokens(self, messages) -> int:
        return sum(len(str(m["content"]).split()) for m in messages) + 8

    def invoke(self, messages, **options):
        from langchain_core.messages import AIMessage

        return AIMessage(content=self.draft)


SECTION_313 = """§ 97.313 Transmitter power standards.

(a) An amateur station must use the minimum transmitter power necessary to carry out the desired communications.

(b) No station may transmit with a transmitter power exceeding 1.5 kW PEP.

(f) No station may transmit with a transmitter power exceeding 50 W PEP on the UHF 70 cm band from an area specified in paragraph (a) of footnote US270 in § 2.106, unless expressly authorized by the FCC after mutual agreement, on a case-by-case basis, between the Regional Director of the applicable field facility and the military area frequency coordinator at the applicable military base.
"""


def _section_chunk():
    from types import SimpleNamespace

    metadata = {"source": "97.313.txt", "section": "97.313", "chunk_index": 0, "char_start": 0}
    metadata["heading"] = "§ 97.313 Transmitter power standards."
    return SimpleNamespace(id="c0", text=SECTION_313, metadata=metadata)


WRONG_NUMBER = (
    "No station may transmit with a transmitter power exceeding 500 W PEP on the UHF 70 cm "
    "band from an area specified in footnote US270 [3]."
)
PARAPHRASE = (
    "Stations near military bases need the FCC's written permission before using 70 cm at "
    "50 W PEP [3]."
)
SHORTENED = (
    "No station may transmit with a transmitter power exceeding 50 W PEP on the UHF 70 cm "
    "band from an area specified in footnote US270 unless expressly authorized by the FCC after "
    "mutual agreement [3]."
)
DROPS_A_CONDITION = SHORTENED.replace(" after mutual agreement", "")


@pytest.mark.parametrize(
    ("draft", "kept", "reasons"),
    [
        (WRONG_NUMBER, False, ("not in passage",)),  # dropped; the quote stays
        (PARAPHRASE, False, ("not the words of", "no supporting passage")),  # changes the rule
        (DROPS_A_CONDITION, False, ("drops a condition",)),  # "after mutual agreement"
        (SHORTENED, True, ()),  # keeps every amount, in the passage's words: replaces the quote
    ],
)
def test_the_verifier_keeps_only_shortened_copies_with_every_number(draft, kept, reasons):
    result = Summarizer(_ScriptedModel(draft)).summarize_chunks([_section_chunk()])
    assert_trustworthy(result)
    model_lines = [s for s in result.sentences if s["kind"] == "model"]
    assert bool(model_lines) == kept, (result.summary, result.dropped)
    if kept:
        assert "§ 97.313(f): No station may" in result.summary and "50 W PEP" in result.summary
        assert not result.fallback
    else:
        assert result.fallback
        assert any(r in d["reason"] for d in result.dropped for r in reasons), result.dropped
        assert '§ 97.313(f): "No station may transmit' in result.summary  # the quote


def test_repeats_and_lead_ins():
    from chains.summarize import copy_precision, is_repeat, trim_quote, without_lead_phrase

    assert is_repeat(
        "The beacon must not exceed 100 W.", ["The power of a beacon must not exceed 100 W."]
    )
    assert not is_repeat("The beacon must not exceed 50 W.", ["The beacon must not exceed 100 W."])
    assert not is_repeat("Use telephony on 243 MHz.", ["Stations must not:"])
    assert without_lead_phrase("Under § 97.313(a), no station may ...") == "No station may ..."
    rule = "No station may transmit with a transmitter power exceeding 1.5 kW PEP."
    assert copy_precision("No station may exceed 1.5 kW PEP.", rule) >= 0.85  # shortened
    assert copy_precision("Amateur stations are limited to 1.5 kW PEP output.", rule) < 0.85
    assert trim_quote("a, " * 200).endswith(" …") and len(trim_quote("a, " * 200)) <= 322


# On real eCFR text ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ecfr_sections(shared_corpus, tmp_path_factory):
    """Three eCFR sections (Part 97 and 80 text of ../shared/fcc-corpus), ingested apart."""
    import shutil

    from ingest.pipeline import ingest_paths

    folder = tmp_path_factory.mktemp("ecfr-sections")
    for part, name in (("97", "97.313.txt"), ("97", "97.119.txt"), ("80", "80.89.txt")):
        shutil.copy(shared_corpus / f"part{part}" / "txt" / name, folder / name)
    report = ingest_paths([folder], collection="test_summaries_ecfr", progress=False)
    assert report.files_skipped == 0
    return "test_summaries_ecfr"


def test_the_limits_of_97_313_each_with_its_pinpoint_and_number(chat_model, ecfr_sections):
    result = Summarizer(chat_model, Retriever(ecfr_sections)).summarize_source("97.313.txt")
    assert_trustworthy(result)
    lines = result.summary.splitlines()

    def line_of(pinpoint: str) -> str:
        return next(line for line in lines if line.startswith(pinpoint + ": "))

    assert "minimum transmitter power necessary" in line_of("§ 97.313(a)")
    assert "1.5 kW PEP" in line_of("§ 97.313(b)")
    assert "200 W PEP" in line_of("§ 97.313(c)(1)") and "10.10-10.15 MHz" in line_of(
        "§ 97.313(c)(1)"
    )
    assert "25 W PEP" in line_of("§ 97.313(d)") and "5 W PEP" in line_of("§ 97.313(e)")
    assert "1.5 kW PEP for the 10.10-10.15 MHz" not in result.summary  # the raw mix-up


def test_97_119_and_80_89_repeat_nothing(ecfr_sections):
    quotes = Summarizer(None, Retriever(ecfr_sections), mode="extractive")
    for source in ("97.119.txt", "80.89.txt"):
        result = quotes.summarize_source(source)
        assert_trustworthy(result)
    # § 80.89's items are imperatives under "Stations must not:": each is read under it.
    assert 'Stations must not: … Engage in superfluous radiocommunication."' in result.summary


def test_the_command_line_prints_cited_json(shared_corpus, tmp_path):
    """`python -m chains.summarize SOURCE --json` as a user runs it, on its own store."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(shared_corpus / "part97" / "txt" / "97.313.txt", corpus / "97.313.txt")
    env = {**os.environ, "QDRANT_PATH": str(tmp_path / "qdrant"), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )

    assert run("-m", "ingest", str(corpus), "--collection", "cli").returncode == 0
    done = run("-m", "chains.summarize", "97.313.txt", "--collection", "cli", "--mode", "extractive", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == "extractive" and result["calls"] == 0
    assert {"summary", "sources", "dropped", "sentences", "timings", "chunks"} <= set(result)
    assert '§ 97.313(b): "No station may transmit with a transmitter power exceeding 1.5 kW PEP."' in result["summary"]  # fmt: skip
    assert [s["n"] for s in result["sources"]] == list(range(1, len(result["sources"]) + 1))


def test_above_is_no_repeat_of_below():
    from chains.summarize import is_repeat
    from evals.summaries import repeated_sentences

    below = "Coast stations below 27500 kHz must not exceed 1 kW."
    above = below.replace("below", "above")
    assert not is_repeat(above, [below]) and is_repeat(below, [below])
    assert repeated_sentences(f"{below}\n{above}") == 0
    # A line repeating one of its two sentences repeats (the metric counts that sentence).
    intro = " The maximum power must not exceed the values listed below."
    assert is_repeat(above + intro, [below + intro])
    assert repeated_sentences(f"{below}{intro}\n{above}{intro}") == 1
