"""The chat model rereads the kept passages (chains.rerank): query likelihood on the real model."""

from __future__ import annotations

import pytest

from chains.evidence import Passage
from chains.rerank import rerank

SPREAD = (
    "No station may transmit with a transmitter power exceeding 10 W PEP when the station "
    "transmits emission type SS."
)
HIGH_POWER = "No station may transmit with a transmitter power exceeding 1.5 kW PEP."
SPURIOUS = (
    "The mean power of any spurious emission from a station transmitter or external RF power "
    "amplifier transmitting on a frequency below 30 MHz must be at least 43 dB below the mean "
    "power of the fundamental emission."
)
COAST = "The maximum power of a coast station on the 2000-27500 kHz band must not exceed 10 kW."
SIXTY_METRES = (
    "No station may transmit with an effective radiated power exceeding 100 W PEP on the 60 m band."
)
SPREAD_QUESTION = "What power may a station use when it transmits a spread spectrum emission?"


def _passage(text: str, pinpoint: str, score: float = 0.7) -> Passage:
    section, _, paragraph = pinpoint.removeprefix("§ ").partition("(")
    return Passage(
        text=text,
        pinpoint=pinpoint,
        section=section,
        paragraph=f"({paragraph}" if paragraph else None,
        source=f"{section}.xml",
        page=None,
        span=(0, len(text)),
        source_span=None,
        chunk_id=pinpoint,
        score=score,
    )


def test_batched_scores_equal_one_at_a_time(chat_model):
    prefixes = ["Passage: " + SPREAD + "\nQuestion:", "Passage: short.\nQuestion:"]
    together = chat_model.continuation_logprob(prefixes, " How much power for SS?")
    alone = [chat_model.continuation_logprob([p], " How much power for SS?")[0] for p in prefixes]
    assert together == pytest.approx(alone, abs=1e-4)  # right padding changes nothing
    assert all(score < 0 for score in together)


@pytest.mark.parametrize(
    ("question", "candidates", "wanted"),
    [
        (SPREAD_QUESTION, [(SPURIOUS, "§ 97.307(d)"), (SPREAD, "§ 97.313(j)")], "97.313"),
        (
            "How much power may I use on the 60 m band?",
            [(COAST, "§ 80.215(a)"), (SIXTY_METRES, "§ 97.313(i)")],
            "97.313",
        ),
    ],
)
def test_the_section_the_question_is_about_comes_first(chat_model, question, candidates, wanted):
    passages = [_passage(text, pinpoint) for text, pinpoint in candidates]
    ranked = rerank(question, passages, chat_model, weight=0.3)
    assert ranked[0].section == wanted
    assert all(p.likelihood is not None for p in ranked)
    assert [p.score for p in passages] == [0.7, 0.7]  # the first stage's scores stay


def test_a_clear_first_stage_lead_is_kept(chat_model):
    passages = [_passage(SPURIOUS, "§ 97.307(d)", 1.5), _passage(SPREAD, "§ 97.313(j)", 0.6)]
    assert rerank(SPREAD_QUESTION, passages, chat_model, weight=0.3)[0].section == "97.307"


def test_paragraphs_of_one_section_keep_the_first_stage_order(chat_model):
    passages = [_passage(HIGH_POWER, "§ 97.313(b)"), _passage(SPREAD, "§ 97.313(j)")]
    assert rerank(SPREAD_QUESTION, passages, chat_model, weight=0.3) == passages
    assert all(p.likelihood is None for p in passages)  # the model was not asked


def test_without_a_model_or_weight_the_order_stays(chat_model):
    passages = [_passage(SPURIOUS, "§ 97.307(d)"), _passage(SPREAD, "§ 97.313(j)")]
    assert rerank(SPREAD_QUESTION, passages, None, weight=0.3) == passages
    assert rerank(SPREAD_QUESTION, passages, chat_model, weight=0.0) == passages
    assert all(p.likelihood is None for p in passages)
