"""Gold-file validation, the fixed subsample, baselines and the report (no models)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

import evals as ev

ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "data" / "eval" / "gold.jsonl"
SUMMARIES = ROOT / "data" / "eval" / "summaries.jsonl"
ECFR_GOLD = ROOT / "data" / "eval" / "ecfr_gold.jsonl"


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_gold_reports_bad_lines_by_number_and_keeps_the_rest(tmp_path):
    good = {
        "id": "a",
        "question": "Q?",
        "sections": ["15.109"],
        "facts": ["1 W"],
        "answerable": True,
    }
    path = _write(
        tmp_path,
        [
            json.dumps(good),
            "{not json",
            "",
            json.dumps({"id": "b", "question": "", "sections": [], "answerable": True}),
            json.dumps({**good, "id": "a"}),
            json.dumps({"id": "c", "question": "Q?", "sections": "15.209", "answerable": "yes"}),
            json.dumps(
                {"id": "d", "question": "Out of scope?", "sections": [], "answerable": False}
            ),
            json.dumps([1, 2]),
        ],
    )
    items, problems = ev.load_gold(path)
    assert [item.id for item in items] == ["a", "d"]
    assert items[0].line == 1 and items[1].line == 7
    joined = "\n".join(problems)
    assert f"{path}:2: not valid JSON" in joined
    assert f"{path}:4: 'question' must be a non-empty string" in joined
    assert f"{path}:5: duplicate id 'a' (first on line 1)" in joined
    assert f"{path}:6: 'answerable' must be true or false" in joined
    assert f"{path}:8: each line must be a JSON object" in joined
    assert all(":3:" not in p for p in problems)  # blank lines are fine


def test_answerable_item_needs_a_gold_section(tmp_path):
    path = _write(tmp_path, [json.dumps({"id": "x", "question": "Q?", "answerable": True})])
    items, problems = ev.load_gold(path)
    assert items == []
    assert problems == [f"{path}:1: an answerable item needs at least one gold section"]


def test_load_summaries_validates(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"id": "s1", "source": "a.md", "reference": "Text.", "facts": ["1 W"]}),
            json.dumps({"id": "s2", "source": "", "reference": "Text."}),
        ],
    )
    items, problems = ev.load_summaries(path)
    assert [s.id for s in items] == ["s1"]
    assert problems == [f"{path}:2: 'source' must be a non-empty string"]


def test_unknown_gold_sections_are_reported():
    index = ev.CorpusIndex()
    index.add("part15.md", "15.109")
    index.add("guides/kdb.pdf", None)
    items = [
        ev.GoldItem("a", "Q", ["15.109", "kdb.pdf", "guides/kdb.pdf"], [], True, line=1),
        ev.GoldItem("b", "Q", ["15.999"], [], True, line=2),
        ev.GoldItem("c", "Q", ["15.999"], [], False, line=3),
    ]
    assert ev.unknown_gold_sections(items, index) == [
        "line 2 (b): gold section(s) not in the corpus: 15.999"
    ]
    assert index.sources_for(["15.109(a)", "kdb.pdf"]) == ["guides/kdb.pdf", "part15.md"]


def test_subsample_is_fixed_and_keeps_unanswerable_share():
    items = [ev.GoldItem(f"q{i}", "Q", ["1"], [], i % 4 != 0) for i in range(40)]
    first = ev.subsample(items, 12)
    assert [i.id for i in first] == [i.id for i in ev.subsample(list(reversed(items)), 12)][::-1]
    assert len(first) == 12
    assert sum(not i.answerable for i in first) == 3
    assert ev.subsample(items, None) == items
    assert ev.subsample(items, 100) == items


def test_baseline_check_names_metric_value_and_baseline():
    entries = {
        "retrieval.hybrid.section.hit@k": {"baseline": 0.9, "tolerance": 0.05},
        "answer.base.false_abstention_rate": {
            "baseline": 0.1,
            "tolerance": 0.05,
            "higher_is_better": False,
        },
        "answer.base.token_f1": {"baseline": 0.3, "tolerance": 0.05},
        "summary.base.rouge_l": {"baseline": 0.2, "tolerance": 0.05},
    }
    aggregate = {
        "retrieval.hybrid.section.hit@k": 0.8,
        "answer.base.false_abstention_rate": 0.2,
        "answer.base.token_f1": 0.26,
    }
    failures = ev.baseline_failures(aggregate, entries)
    assert len(failures) == 3
    assert "retrieval.hybrid.section.hit@k = 0.8000 fell below baseline 0.9000" in failures[1]
    assert "answer.base.false_abstention_rate = 0.2000 rose above baseline 0.1000" in failures[0]
    assert "summary.base.rouge_l: no value" in failures[2]


def test_write_baseline_keeps_hand_set_tolerances(tmp_path):
    path = tmp_path / "baseline.json"
    result = ev.EvalResult(
        config={
            "gold": "g.jsonl",
            "k": 4,
            "mode": "hybrid",
            "limit": 8,
            "retrieval_only": False,
            "max_new_tokens": 64,
            "seed": 1,
            "summaries": False,
            "collection": "x",
        },
        aggregate={
            "retrieval.dense.section.mrr": 0.71234,
            "answer.base.unsupported_numbers": 0.5,
            "answer.base.token_f1": 0.2,
            "latency.base.total_s.p50": 3.0,
            "summary.base.rouge_l": None,
        },
        counts={
            "retrieval.dense.section.mrr": 50,
            "answer.base.unsupported_numbers": 8,
            "answer.base.token_f1": 8,
        },
        items=[],
        summaries=[],
        problems=[],
    )
    first = ev.write_baseline(result, "gold", path)
    assert first["metrics"] == {
        "retrieval.dense.section.mrr": {"baseline": 0.7123, "tolerance": 0.02},
        "answer.base.unsupported_numbers": {
            "baseline": 0.5,
            "tolerance": 0.25,
            "higher_is_better": False,
        },
        "answer.base.token_f1": {"baseline": 0.2, "tolerance": 0.05},
    }
    assert first["config"]["limit"] == 8 and "collection" not in first["config"]
    document = json.loads(path.read_text())
    document["gold"]["metrics"]["retrieval.dense.section.mrr"]["tolerance"] = 0.1
    path.write_text(json.dumps(document))
    second = ev.write_baseline(result, "gold", path)
    assert second["metrics"]["retrieval.dense.section.mrr"]["tolerance"] == 0.1


def test_metrics_that_cannot_fail_are_not_guarded(tmp_path):
    aggregate = {
        "answer.base.cited_answer_rate": 0.0,  # a share already at zero cannot fall
        "answer.base.abstention_accuracy": 0.5,  # 2 items: tolerance 1.0 swallows everything
        "answer.base.false_abstention_rate": 0.9,  # a rate cannot rise past 1
        "answer.base.key_fact_recall": 0.5,
    }
    counts = {
        "answer.base.cited_answer_rate": 10,
        "answer.base.abstention_accuracy": 2,
        "answer.base.false_abstention_rate": 10,
        "answer.base.key_fact_recall": 10,
    }
    result = ev.EvalResult({"gold": "g"}, aggregate, counts, [], [], [])
    written = ev.write_baseline(result, "gold", tmp_path / "baseline.json")
    assert list(written["metrics"]) == ["answer.base.key_fact_recall"]


@pytest.mark.parametrize("path", [GOLD, SUMMARIES, ECFR_GOLD], ids=lambda p: p.name)
def test_checked_in_gold_files_are_valid(path):
    loader = ev.load_summaries if path == SUMMARIES else ev.load_gold
    items, problems = loader(path)
    assert problems == []
    assert items


def test_sample_gold_has_enough_items():
    items, _ = ev.load_gold(GOLD)
    assert len(items) >= 56
    assert any(not item.answerable for item in items)


def _fake_result() -> ev.EvalResult:
    """Two gold items scored by hand-made retrieval and answer records."""
    items = [
        ev.GoldItem("a", "What is the SAR limit?", ["1.1310"], ["1.6 W/kg"], True, "1.6 W/kg.", 1),
        ev.GoldItem("b", "Who won the cup?", [], [], False, None, 2),
    ]

    def mode_record(first_hit: bool) -> dict:
        keys = [{"1.1310"}, {"2.1"}] if first_hit else [{"2.1"}, {"1.1310"}]
        return {
            "retrieved": [],
            "seconds": 0.01,
            "section": ev.metrics.retrieval_scores(keys, ["1.1310"], 2),
            "source": ev.metrics.retrieval_scores([{"p1.md"}, {"p2.md"}], ["p1.md"], 2),
        }

    retrieval = {
        "a": {
            "gold_sources": ["p1.md"],
            "modes": {m: mode_record(m != "dense") for m in ev.RETRIEVAL_MODES},
        },
        "b": {
            "gold_sources": [],
            "modes": {
                m: {**mode_record(True), "section": None, "source": None}
                for m in ev.RETRIEVAL_MODES
            },
        },
    }
    timings = {"retrieve_s": 0.1, "first_token_s": 0.5, "total_s": 2.0}
    answers = {
        "base": {
            "a": {
                "abstained": False,
                "timings": timings,
                "metrics": {"key_fact_recall": 1.0, "token_f1": 0.5},
            },
            "b": {"abstained": True, "timings": timings, "metrics": {}},
        },
        "adapter": {
            "a": {
                "abstained": True,
                "timings": timings,
                "metrics": {"key_fact_recall": 0.0, "token_f1": 0.0},
            },
            "b": {"abstained": False, "timings": timings, "metrics": {"citation_validity": 1.0}},
        },
    }
    aggregate, counts = ev.aggregate_metrics(
        items, retrieval, list(ev.RETRIEVAL_MODES), answers, {}
    )
    records = [{**asdict(i), "retrieval": retrieval[i.id], "answers": {}} for i in items]
    config = {
        "gold": "g.jsonl",
        "k": 2,
        "mode": "hybrid",
        "items": 2,
        "answer_items": 2,
        "variants": {"base": None, "adapter": "x"},
    }
    return ev.EvalResult(
        config,
        aggregate,
        counts,
        records,
        [],
        ["line 9 (z): gold section(s) not in the corpus: 9.9"],
    )


def test_aggregate_metrics():
    result = _fake_result()
    agg, counts = result.aggregate, result.counts
    assert agg["retrieval.dense.section.hit@1"] == 0.0
    assert agg["retrieval.dense.section.mrr"] == 0.5
    assert agg["retrieval.hybrid.section.hit@1"] == 1.0
    assert counts["retrieval.hybrid.section.hit@1"] == 1  # the unanswerable item has no gold
    assert agg["answer.base.abstention_accuracy"] == 1.0
    assert agg["answer.base.false_abstention_rate"] == 0.0
    assert agg["answer.adapter.abstention_accuracy"] == 0.0
    assert agg["answer.adapter.false_abstention_rate"] == 1.0
    assert agg["answer.base.key_fact_recall"] == 1.0
    assert (
        agg["answer.base.citation_validity"] is None
        and counts["answer.base.citation_validity"] == 0
    )
    assert agg["latency.base.total_s.p50"] == 2.0


def test_report_and_chart(tmp_path):
    result = _fake_result()
    ev.write_outputs(result, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| hybrid | 1.000 | 1.000 | 1.000 | 1.000 |" in report
    assert "| dense | 0.000 | 1.000 | 1.000 | 0.500 |" in report
    assert "| metric | base | adapter |" in report
    assert "9.9" in report  # gold problems are listed
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["aggregate"]["retrieval.hybrid.section.mrr"] == 1.0
    assert [i["id"] for i in saved["items"]] == ["a", "b"]


def test_a_quoted_pinpoint_is_no_unsupported_number():
    """The extractive quote `§ 97.313(b): "..." [1]` repeats its pinpoint's numbers; only a
    number in neither the passages, their pinpoints nor the question counts against it."""
    from chains.rag import RagResult, Source
    from evals.gold import GoldItem
    from evals.runner import score_answer

    text = "No station may transmit with a transmitter power exceeding 1.5 kW PEP."
    source = Source(1, "97.313.txt", None, "97.313", None, 0.9, text, pinpoint="§ 97.313(b)")
    item = GoldItem("x", "What is the most power?", ["97.313"], ["1.5 kW PEP"], True)
    quoted = f'§ 97.313(b): "{text}" [1]'
    record = score_answer(item, [source], quoted, RagResult(item.question, item.question, quoted))
    assert record["unsupported_numbers"] == []
    assert record["metrics"]["answers_with_unsupported_numbers"] == 0.0
    wrong = quoted + " Up to 2 kW is fine [1]."
    record = score_answer(item, [source], wrong, RagResult(item.question, item.question, wrong))
    assert record["unsupported_numbers"] == ["2"]
