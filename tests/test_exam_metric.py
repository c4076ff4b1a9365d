"""The exam metric ("answered right") and the exam data check, on hand-made cases (no model,
no store; the shipped file is checked against the shared corpus when it is present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chains.prompts import WEAK_MATCH_NOTE
from evals import exam

ROOT = Path(__file__).resolve().parents[1]
EXAM = ROOT / "data" / "eval" / "ecfr_exam.jsonl"
CORPUS = ROOT.parent / "shared" / "fcc-corpus"

POWER = ["1.5 kW PEP", "200 W PEP", "10 W PEP", "100 W PEP"]


def right(answer: str, choices: list[str], correct: int) -> bool:
    return exam.answered_right(answer, choices, correct)


# Distinctive words and support ---------------------------------------------------------------


def test_distinctive_words_leave_out_what_choices_share():
    distinct = [d for d, _ in exam.distinctive_tokens(POWER)]
    assert distinct == [{"1500w"}, {"200w"}, {"10w"}, {"100w"}]  # "PEP" is in every choice
    words = [d for d, _ in exam.distinctive_tokens(["Stations in a contest", "The station first"])]
    assert words == [{"contest"}, {"first"}]  # "station(s)" shared, stopwords dropped


def test_support_is_the_share_of_distinctive_words_present():
    choices = [
        "Amateur Extra or Advanced Class",
        "Technician or higher",
        "General or higher",
        "Novice",
    ]
    support = exam.choice_support("Amateur Extra Class in order to administer ...", choices)
    assert support == [0.75, 0.0, 0.0, 0.0]  # amateur, extra, class of amateur/extra/advanced/class


def test_the_correct_choice_must_beat_every_distractor():
    quote = (
        '§ 97.313(j): "No station may transmit with a transmitter output exceeding 10 W PEP" [1]'
    )
    assert right(quote, POWER, 2)
    assert not right(quote, POWER, 3)


def test_ties_are_wrong_zero_included():
    both = "No station may exceed 1.5 kW PEP; on 10.10-10.15 MHz, 200 W PEP."
    assert not right(both, POWER, 0)  # a neighbouring value supported as much
    assert not right("The documents do not say.", POWER, 0)  # 0 = 0
    assert not right("", POWER, 0)


def test_numbers_with_units_compare_by_value():
    assert right("The limit is 1500 watts PEP.", POWER, 0)  # 1.5 kW = 1500 W
    assert right("must not exceed ten seconds", ["10 s", "30 s", "1 minute", "2 minutes"], 0)
    assert right("for 3 minutes", ["180 seconds", "3 hours", "30 seconds", "10 minutes"], 0)
    assert right("a 10-year term", ["2 years", "10 years", "5 years", "For life"], 1)
    assert right("at least four persons", ["Two", "Four", "Ten", "Twenty"], 1)
    # A bare number is no quantity: "10" in an answer does not support "10 W".
    assert not right("paragraph 10 of the rule", POWER, 2)


def test_a_range_is_found_in_a_table_row_without_its_unit():
    row = "2 m | 144-146 | 144-148 | 144-148 | (a), (k)."
    choices = ["144-148 MHz", "144-146 MHz", "140-150 MHz", "146-150 MHz"]
    assert right(row, choices, 0)  # "146" is shared by two distractors: not distinctive


def test_markers_pinpoints_notes_and_paragraph_letters_are_not_words():
    answer = f'{WEAK_MATCH_NOTE}\n§ 97.203(c): "(c) The transmitter power of a beacon must not exceed 100 W." [2]'
    assert exam.content_tokens(answer).words == {"transmitter", "power", "beacon", "exceed", "100w"}
    # Paragraph numbers "(1)" and Federal Register notes are no support for a number.
    text = "(1) Within 50 km. [59 FR 54831, Nov. 2, 1994]"
    assert not right(text, ["1", "2", "4", "10"], 0)
    assert not right(text, ["1", "2", "4", "10"], 1)


def test_plural_and_possessive_forms_match():
    choices = ["The master of the ship", "The chief engineer", "The owner ashore", "The crew"]
    assert right("under the ultimate control of the master", choices, 0)
    assert right(
        "the licensee's persons", ["A licensee's person", "Only a minor", "An alien", "No one"], 0
    )


# Items and the data check --------------------------------------------------------------------


def item(**overrides) -> dict:
    record = {
        "id": "x1",
        "question": "What is the most power a beacon may use?",
        "choices": ["100 W", "1 W", "25 W", "1.5 kW"],
        "answer": 0,
        "sections": ["97.203"],
        "paragraph": "(c)",
        "answerable": True,
    }
    return {**record, **overrides}


def write(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "exam.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"choices": ["100 W", "1 W", "25 W"]}, "4 non-empty strings"),
        ({"choices": ["100 W", "1 W", "25 W", "100  w"]}, "distinct"),
        ({"choices": ["100 W", "1 W", "25 W", "All of these"]}, "cannot be scored"),
        ({"choices": ["100 W", "1 W", "25 W", "Both A and B"]}, "cannot be scored"),
        ({"answer": 4}, "index of the correct choice"),
        ({"answer": True}, "index of the correct choice"),
        ({"sections": []}, "sections"),
        ({"choices": ["1 W", "1 W or 2 W", "2 W", "3 W"]}, "no word that the other"),
    ],
)
def test_malformed_items_are_reported(tmp_path, overrides, message):
    items, problems = exam.load_exam(write(tmp_path, [item(**overrides)]))
    assert not items
    assert any(message in p for p in problems), problems


def test_duplicate_ids_and_questions_are_reported(tmp_path):
    path = write(
        tmp_path,
        [item(), item(), item(id="x2", question="what is the MOST power a beacon may use?")],
    )
    items, problems = exam.load_exam(path)
    assert [i.id for i in items] == ["x1"]
    assert any("duplicate id" in p for p in problems)
    assert any("duplicate question" in p for p in problems)


def test_bm25_ranks_the_passage_with_the_rare_terms_first():
    docs = [["beacon", "power", "100", "w"], ["repeater", "power"], ["power", "power", "station"]]
    assert exam.BM25(docs).top(["beacon", "power"], 2) == [0, 2]


def test_aggregate_scores_variants_and_baselines(tmp_path):
    def record(right_chain: bool, right_bm25: bool) -> dict:
        answer = {"right": right_chain, "section_hit1": 1.0, "section_hit_any": 1.0}
        return {
            "variants": {"base": answer},
            "bm25_top3": {"right": right_bm25, "section_hit1": 0.0},
            "section_text": {"right": True},
            "paragraph_text": {"right": True},
        }

    aggregate, counts = exam.aggregate_exam([record(True, False), record(False, False)])
    assert aggregate["exam.base.answered_right"] == 0.5
    assert aggregate["exam.bm25_top3.answered_right"] == 0.0
    assert aggregate["exam.base.margin_over_bm25"] == 0.5
    assert aggregate["exam.section_text.answered_right"] == 1.0
    assert counts["exam.base.section_hit1"] == 2


@pytest.mark.skipif(not (CORPUS / "part97").is_dir(), reason="the shared eCFR corpus is absent")
def test_the_shipped_exam_is_well_formed_and_its_paragraphs_separate_the_answer():
    problems = exam.check_file(EXAM, [CORPUS / "part97" / "txt", CORPUS / "part80" / "txt"])
    errors = [p for p in problems if "warning:" not in p]
    assert not errors, errors
    # Every item's cited paragraph holds the right choice's words more than the distractors'.
    assert not [p for p in problems if "paragraph text" in p]
    items, _ = exam.load_exam(EXAM)
    assert len(items) >= 160
    positions = [sum(i.answer == k for i in items) for k in range(4)]
    assert max(positions) - min(positions) <= len(items) // 20
