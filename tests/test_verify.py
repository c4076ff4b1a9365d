"""Generate, then verify: numbers and units, support scores, kept/dropped sentences, quotes.

Real MiniLM, real eCFR passages (held-out corpus, skipped when absent) and sample corpus text.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from chains.evidence import Passage, rank_passages, split_passages
from chains.quantities import extract_quantities, missing_quantities
from chains.verify import (
    SUPPORT_THRESHOLD,
    extractive_answer,
    support_score,
    verify_answer,
)
from tests.conftest import SAMPLE_CORPUS


@pytest.fixture(scope="module")
def embedder():
    from core.store import get_sentence_model

    return get_sentence_model()


def _section(shared_corpus: Path, section: str) -> list[Passage]:
    part = section.split(".")[0]
    text = (shared_corpus / f"part{part}" / "txt" / f"{section}.txt").read_text()
    meta = {"section": section, "heading": text.splitlines()[0], "source": f"{section}.txt"}
    return split_passages(SimpleNamespace(id=section, text=text, metadata=meta))


def _numbered(*passages: Passage) -> list[Passage]:
    for n, passage in enumerate(passages, 1):
        passage.n = n
    return list(passages)


@pytest.fixture()
def model_craft(shared_corpus) -> list[Passage]:
    """What the model saw for a telecommand question: [1] § 97.215(c), [2] § 97.313(b), ..."""
    p215 = {p.pinpoint: p for p in _section(shared_corpus, "97.215")}
    p313 = {p.pinpoint: p for p in _section(shared_corpus, "97.313")}
    return _numbered(
        p215["§ 97.215(c)"], p313["§ 97.313(b)"], p215["§ 97.215(b)"], p215["§ 97.215(a)"]
    )


QUESTION = "What is the maximum transmitter power for telecommand of a model craft?"


# Numbers and units ------------------------------------------------------------------------


def _values(text: str) -> list[tuple[float, str | None]]:
    return [(q.value, q.unit) for q in extract_quantities(text) if q.kind != "section"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 W", [(1, "W")]),
        ("1 watt", [(1, "W")]),
        ("one watt or less", [(1, "W")]),
        ("1.5 kW", [(1500, "W")]),
        ("1500 W", [(1500, "W")]),
        ("25 watts", [(25, "W")]),
        ("200 milliwatts", [(0.2, "W")]),
        ("156-162 MHz", [(156e6, "Hz"), (162e6, "Hz")]),
        ("between 28.300 and 28.500 MHz", [(28.3e6, "Hz"), (28.5e6, "Hz")]),  # a range too
        ("2.4 GHz", [(2.4e9, "Hz")]),
        ("10 W PEP", [(10, "W")]),
        ("0.5 percent", [(0.5, "%")]),
        ("50 dBµV", [(50, "dBuV")]),  # micro sign
        ("50 dBμV", [(50, "dBuV")]),  # Greek mu
        ("-13 dBm", [(-13, "dBm")]),
        ("100-160 kHz—80kW", [(100e3, "Hz"), (160e3, "Hz"), (80e3, "W")]),
        ("5,000 gross tons", [(5000, None)]),
    ],
)
def test_quantities_are_normalised(text, expected):
    found = _values(text)
    assert len(found) == len(expected), found
    for (value, unit), (want_value, want_unit) in zip(found, expected, strict=True):
        assert unit == want_unit and math.isclose(value, want_value, rel_tol=1e-9)


def test_section_ids_and_markers_are_not_quantities():
    found = extract_quantities("Under § 97.313(c)(1), 1.5 kW PEP applies [2]; see 47 CFR 97.305.")
    assert [(q.kind, q.ref) for q in found if q.kind == "section"] == [
        ("section", "97.313"),
        ("section", "97.305"),
    ]
    assert _values("Under § 97.313(c)(1), 1.5 kW PEP applies [2]; see 47 CFR 97.305.") == [
        (1500, "W")
    ]
    assert _values("§§ 15.211, 15.213, and 15.221 and paragraph (g)(4)") == []
    assert _values("US270 and A1D emissions") == []  # codes, not numbers


def test_unit_normalisation_in_the_numbers_gate(shared_corpus):
    b = next(p for p in _section(shared_corpus, "97.313") if p.pinpoint == "§ 97.313(b)")
    assert missing_quantities("The limit is 1500 W PEP.", b) == []
    assert missing_quantities("The limit is 1.5 kilowatts.", b) == []
    assert missing_quantities("Section 97.313 sets 1.5 kW.", b) == []  # its own section id
    assert [q.text for q in missing_quantities("The limit is 1.67 kW.", b)] == ["1.67 kW"]
    assert [q.text for q in missing_quantities("It is 1.5 MHz wide.", b)] == ["1.5 MHz"]
    assert [q.text for q in missing_quantities("About 40 stations.", b)] == ["40"]


# Support ----------------------------------------------------------------------------------


def test_support_scores_separate_faithful_from_unfaithful(model_craft, embedder):
    power = model_craft[0]
    verbatim = support_score("The transmitter power must not exceed 1 W. [1]", power, embedder)
    faithful = support_score(
        "Telecommand transmitters for model craft may use at most one watt of power.",
        power,
        embedder,
    )
    unrelated = support_score(
        "The station must be licensed by the FCC before operating.", power, embedder
    )
    assert verbatim == 1.0
    assert faithful > SUPPORT_THRESHOLD + 0.1
    assert unrelated < SUPPORT_THRESHOLD - 0.1
    # With the question: what a sentence restates from it is no evidence. A contradiction
    # that shares the passage's words ("codes or ciphers") then falls below the threshold.
    ciphers = model_craft[2]
    contradiction = "The control signals must be encrypted."
    question = "Are telecommand control signals considered codes or ciphers?"
    assert support_score(contradiction, ciphers, embedder) > SUPPORT_THRESHOLD
    assert support_score(contradiction, ciphers, embedder, question=question) < SUPPORT_THRESHOLD
    kept = "Model craft control signals are not considered codes or ciphers."
    assert support_score(kept, ciphers, embedder, question=question) > SUPPORT_THRESHOLD + 0.2


def test_sentences_that_only_restate_the_question_are_dropped(shared_corpus, embedder):
    p313 = _section(shared_corpus, "97.313")
    first_i = next(p for p in p313 if p.pinpoint == "§ 97.313(i)")
    passages = _numbered(next(p for p in p313 if p.pinpoint == "§ 97.313(h)"), first_i)
    question = "What power limit applies on the 60 m band?"
    draft = "No power limit applies on the 60 m band [2]. The limit is given in the table below."
    result = verify_answer(question, draft, passages, embedder)
    assert [d["reason"] for d in result.dropped] == ["restates the question"] * 2
    assert result.fallback and result.cited == [2]  # ranked best for the question
    assert result.answer.startswith('§ 97.313(i): "No station may transmit')


def test_keeps_a_faithful_paraphrase_with_its_marker(model_craft, embedder):
    draft = "Telecommand transmitters for a model craft may use at most 1 W of power [1]."
    result = verify_answer(QUESTION, draft, model_craft, embedder)
    assert not result.fallback
    assert (
        result.answer
        == "Telecommand transmitters for a model craft may use at most 1 W of power. [1]"
    )
    assert result.cited == [1]
    assert result.sentences[0].n == 1 and result.sentences[0].model_n == [1]
    assert result.sentences[0].score >= SUPPORT_THRESHOLD
    assert result.dropped == []


def test_corrects_a_wrong_marker(model_craft, embedder):
    draft = "The control signals are not considered codes or ciphers [1]."
    question = "What other rules apply to telecommand of a model craft?"
    result = verify_answer(question, draft, model_craft, embedder)
    assert result.answer == "The control signals are not considered codes or ciphers. [3]"
    assert result.sentences[0].model_n == [1] and result.cited == [3]


def test_drops_the_wrong_power_and_falls_back_to_the_quote(model_craft, embedder):
    result = verify_answer(QUESTION, "The maximum power is 1.67 kilowatts.", model_craft, embedder)
    assert result.fallback
    assert result.answer == '§ 97.215(c): "The transmitter power must not exceed 1 W." [1]'
    assert result.cited == [1]
    assert result.dropped[0]["text"] == "The maximum power is 1.67 kilowatts."
    assert "1.67 kilowatts" in result.dropped[0]["reason"]


def test_drops_only_the_sentences_with_unsupported_numbers(model_craft, embedder):
    draft = (
        "The transmitter power must not exceed 5 W [1]. "
        "The transmitter power must not exceed 1 W [1]. "
        "No station may transmit with more than 1500 watts PEP [2]."
    )
    result = verify_answer(QUESTION, draft, model_craft, embedder)
    assert result.answer == (
        "The transmitter power must not exceed 1 W. [1] "
        "No station may transmit with more than 1500 watts PEP. [2]"
    )
    assert len(result.dropped) == 1
    assert result.dropped[0]["reason"].startswith("number 5 W not in passage [1]")
    assert result.cited == [1, 2]


def test_fallback_quote_format(shared_corpus, embedder):
    p313 = _section(shared_corpus, "97.313")
    question = "What is the most transmitter power, in kW PEP, that any amateur station may use?"
    ranked = rank_passages(question, p313, embedder, k=3)
    _numbered(*ranked)
    assert ranked[0].pinpoint == "§ 97.313(b)"
    result = verify_answer(question, "Bananas are yellow and grow in bunches.", ranked, embedder)
    assert result.fallback and result.cited[0] == 1
    # The best passage first; a second quote only when it ranks within QUOTE_MARGIN.
    assert result.answer.splitlines()[0] == (
        '§ 97.313(b): "No station may transmit with a transmitter power exceeding 1.5 kW PEP." [1]'
    )
    assert len(result.answer.splitlines()) == len(result.cited) <= 2


def test_empty_garbage_and_repetitive_drafts_fall_back(model_craft, embedder):
    for draft in ("", "   ", "[1] [2]", "power power power power power power power power."):
        result = verify_answer(QUESTION, draft, model_craft, embedder)
        assert result.fallback and result.answer.startswith('§ 97.215(c): "'), draft
        assert result.sentences[0].n == 1
    assert verify_answer(QUESTION, "", [], embedder).answer == ""


def test_korean_draft_does_not_crash(model_craft, embedder):
    result = verify_answer(
        QUESTION, "모형 항공기 원격 조종의 최대 송신 출력은 1.67 kW입니다.", model_craft, embedder
    )
    assert result.fallback and result.answer.endswith("[1]")
    assert len(result.dropped) == 1


def test_long_looping_draft_is_fast_and_deduplicated(model_craft, embedder):
    loop = "The transmitter power must not exceed 1 W [1]. The maximum power is 1.67 kilowatts. "
    draft = (loop * 300)[:20_000]
    started = time.perf_counter()
    result = verify_answer(QUESTION, draft, model_craft, embedder)
    assert time.perf_counter() - started < 5
    assert result.answer == "The transmitter power must not exceed 1 W. [1]"  # once
    reasons = {d["reason"].split()[0]: d["text"] for d in result.dropped}
    assert sorted(reasons) == ["number", "unfinished"] and len(result.dropped) == 2
    assert reasons["unfinished"] == draft[draft.rindex(".") + 1 :].strip()  # cut at 20,000


def test_markers_are_stripped_before_scoring(model_craft, embedder):
    result = verify_answer(
        QUESTION, "The transmitter power must not exceed 1 W [2][4].", model_craft, embedder
    )
    assert result.sentences[0].score == 1.0 and result.sentences[0].model_n == [2, 4]
    assert result.answer.endswith("[1]")


# Extractive answers ---------------------------------------------------------------------------


def _scored(passage: Passage, score: float) -> Passage:
    passage.score, passage.dense_score = score, score
    return passage


def test_extractive_second_quote_only_when_close_and_elsewhere(shared_corpus):
    p313 = {p.pinpoint: p for p in _section(shared_corpus, "97.313")}
    i_sentences = [p for p in _section(shared_corpus, "97.313") if p.pinpoint == "§ 97.313(i)"]
    b, k = p313["§ 97.313(b)"], p313["§ 97.313(k)"]
    close = extractive_answer("q", _numbered(_scored(b, 0.80), _scored(k, 0.78)))
    assert close.answer.splitlines() == [
        '§ 97.313(b): "No station may transmit with a transmitter power exceeding 1.5 kW PEP." [1]',
        f'§ 97.313(k): "{k.text}" [2]',
    ]
    assert close.cited == [1, 2] and close.fallback
    far = extractive_answer("q", _numbered(_scored(b, 0.80), _scored(k, 0.60)))
    assert far.cited == [1]
    same = extractive_answer(
        "q", _numbered(_scored(i_sentences[0], 0.8), _scored(i_sentences[1], 0.8))
    )
    assert same.cited == [1]  # the same paragraph is not quoted twice
    assert extractive_answer("q", _numbered(_scored(b, 0.8), _scored(k, 0.8)), 1).cited == [1]


def test_a_quoted_row_brings_one_paragraph_it_cites():
    """§ 97.305(c)'s row names the paragraph holding its band's standards; the answer quotes
    two passages, and the row's cited paragraph comes on top of them (one, not every one)."""

    def passage(pinpoint: str, text: str, score: float, standard_of: str | None = None):
        section, _, paragraph = pinpoint[2:].partition("(")
        return _scored(
            Passage(text, pinpoint, section, f"({paragraph}", None, None, (0, len(text)), None,
                    pinpoint, standard_of=standard_of),
            score,
        )  # fmt: skip

    row = "§ 97.305(c)(3)(iii)"
    ranked = _numbered(
        passage("§ 97.303(h)(1)", "In the 5330.5-5406.4 kHz band (60 m band), ...", 0.82),
        passage(row, "60 m | 5.332, 5.348, 5.3585, 5.373 and 5.405 MHz | Phone | (f)(14).", 0.78),
        passage("§ 97.307(f)(14)(i)", "Phone | 2K80J3E | Upper sideband (USB).", 0.78, row),
        passage("§ 97.307(f)(14)(ii)", "CW | 150HA1A | Morse telegraphy.", 0.78, row),
        passage("§ 97.303(h)(2)", "Amateur stations transmitting on the 60 m band ...", 0.77),
    )
    assert extractive_answer("q", ranked).cited == [1, 2, 3]
    ranked[2].standard_of = ranked[3].standard_of = None  # no row cites them
    assert extractive_answer("q", ranked).cited == [1, 2]


def test_extractive_answer_ranks_unscored_passages(embedder):
    text = (SAMPLE_CORPUS / "part15_conducted_limits.txt").read_text()
    start = text.index("§ 15.207")
    meta = {"section": "15.207", "heading": "§ 15.207 Conducted limits.", "source": "c.txt"}
    passages = split_passages(SimpleNamespace(id="x", text=text[start:], metadata=meta))
    result = extractive_answer(
        "Are battery-only intentional radiators tested for conducted emissions?",
        passages,
        max_quotes=1,
        embedder=embedder,
    )
    assert result.answer.startswith('§ 15.207(c): "Conducted measurements are not required')
    assert result.answer.endswith(f"[{result.cited[0]}]")


def test_sample_corpus_spread_spectrum_limits(embedder):
    """An HTML table row and a rule paragraph of the sample corpus as support."""
    from ingest.loaders import load_file

    path = SAMPLE_CORPUS / "part15_247_spread_spectrum.html"
    loaded = load_file(path, path.read_bytes())
    text = loaded.segments[0].text
    meta = {"section": "15.247", "heading": "§ 15.247", "source": path.name}
    passages = split_passages(SimpleNamespace(id="h", text=text, metadata=meta))
    question = "What is the output power limit for digital modulation systems at 2.4 GHz?"
    ranked = _numbered(*rank_passages(question, passages, embedder, k=5))
    good = "Systems using digital modulation may use up to 1 watt of conducted output power."
    bad = "Systems using digital modulation may use up to 2 watts of conducted output power."
    result = verify_answer(question, f"{good} {bad}", ranked, embedder)
    assert [s.text for s in result.sentences] == [good]
    assert result.dropped[0]["text"] == bad and "2 watts" in result.dropped[0]["reason"]
    assert result.cited and not result.fallback


def test_a_floor_stated_as_the_maximum_is_dropped():
    """A real SmolLM2 draft kept before this rule: § 80.215(g) says "at least 8 but not more
    than 25 watts", so 8 W is the floor, not the maximum."""
    from chains.evidence import Passage
    from chains.quantities import bound_conflicts
    from chains.verify import verify_answer

    text = (
        "Ship stations shall be equipped with transmitters capable of at least 8 but not more "
        "than 25 watts carrier power in the 156-162 MHz band."
    )
    passage = Passage(
        text, "§ 80.215(g)", "80.215", "(g)", "80.215.txt", None, (0, len(text)), None, "c1"
    )
    assert bound_conflicts("The maximum power of a ship station is 8 watts.", passage)
    assert not bound_conflicts("The maximum power of a ship station is 25 watts.", passage)
    assert not bound_conflicts("A ship station must manage at least 8 watts.", passage)
    result = verify_answer(
        "What is the maximum power of a ship station on VHF?",
        "The maximum power of a ship station on VHF is 8 watts.",
        [passage],
    )
    assert result.fallback and "8 watts" not in result.answer.split(":")[0]
    assert result.dropped and "8 watts" in result.dropped[0]["reason"]


def test_a_sentence_without_the_asked_amount_is_dropped(model_craft, embedder):
    result = verify_answer(
        QUESTION,
        "The control signals are not considered codes or ciphers [3].",
        model_craft,
        embedder,
    )
    assert result.fallback and "1 W" in result.answer
    assert result.dropped[0]["reason"] == "states no amount; one was asked"


def test_extractive_quotes_follow_the_model_s_reread_order():
    """The chain's rereading (`chains.rerank`) puts § 15.5(b) first; the quote follows it, not
    the first-stage score that put a labelling-table row above it."""
    row = Passage(
        "Receiver | operation subject to the condition",
        "table",
        None,
        None,
        "l.html",
        None,
        (0, 40),
        None,
        "c1",
        score=0.767,
        dense_score=0.6,
        likelihood=-2.4,
    )
    rule = Passage("is subject to two conditions: the device may not cause harmful interference",
                   "§ 15.5(b)", "15.5", "(b)", "g.md", None, (0, 70), None, "c2", score=0.727,
                   dense_score=0.5, likelihood=-1.1)  # fmt: skip
    quoted = extractive_answer("What are the two conditions of operation?", [rule, row])
    assert quoted.answer.startswith("§ 15.5(b)") and quoted.cited[0] == 1
    unread = [replace(p, likelihood=None) for p in (rule, row)]
    assert extractive_answer("What are the two conditions?", unread).answer.startswith("table")
