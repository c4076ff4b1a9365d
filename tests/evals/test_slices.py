"""Retrieval reported per gold slice (`"slice": "colloquial"`): aggregate keys and report."""

from __future__ import annotations

from dataclasses import asdict

import evals as ev
from tests.evals.test_offline import ECFR_GOLD


def _mode_record(hit_first: bool) -> dict:
    keys = [{"97.25"}, {"97.3"}] if hit_first else [{"97.3"}, {"80.5"}]
    return {
        "retrieved": [],
        "seconds": 0.01,
        "section": ev.metrics.retrieval_scores(keys, ["97.25"], 2),
        "source": ev.metrics.retrieval_scores([{"a.txt"}], ["a.txt"], 2),
    }


def _result() -> ev.EvalResult:
    items = [
        ev.GoldItem("a", "How long is an amateur license term?", ["97.25"], [], True, line=1),
        ev.GoldItem("b", "When does my ham license run out?", ["97.25"], [], True, line=2),
        ev.GoldItem("c", "Is my ham license good for life?", ["97.25"], [], True, line=3),
        ev.GoldItem("d", "What is the CB power limit?", [], [], False, line=4),
    ]
    items[1].slice = items[2].slice = "colloquial"
    items[3].slice = "on_topic_unanswerable"
    hits = {"a": True, "b": True, "c": False}
    retrieval = {
        item.id: {
            "gold_sources": [],
            "modes": {
                mode: _mode_record(hits.get(item.id, False))
                if item.answerable
                else {**_mode_record(False), "section": None, "source": None}
                for mode in ev.RETRIEVAL_MODES
            },
        }
        for item in items
    }
    aggregate, counts = ev.aggregate_metrics(items, retrieval, list(ev.RETRIEVAL_MODES), {}, {})
    records = [{**asdict(i), "retrieval": retrieval[i.id], "answers": {}} for i in items]
    config = {"gold": "g.jsonl", "k": 2, "mode": "hybrid", "items": 4, "answer_items": 0}
    return ev.EvalResult(config, aggregate, counts, records, [], [])


def test_slice_metrics_are_added_beside_the_overall_ones():
    result = _result()
    agg, counts = result.aggregate, result.counts
    assert agg["retrieval.hybrid.section.hit@1"] == 2 / 3  # unchanged: all answerable items
    assert counts["retrieval.hybrid.section.hit@1"] == 3
    assert agg["retrieval.hybrid.section.hit@1@colloquial"] == 0.5
    assert counts["retrieval.hybrid.section.hit@1@colloquial"] == 2
    assert agg["retrieval.dense.source.mrr@colloquial"] == 1.0  # one source, always found
    # A slice of unanswerable items has no retrieval score, hence no key.
    assert not any(key.endswith("@on_topic_unanswerable") for key in agg)


def test_report_has_a_slice_table(tmp_path):
    ev.write_outputs(_result(), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Retrieval by gold slice, section level (k = 2)" in report
    assert "| hybrid | all | 0.667 | 0.667 | 0.667 | 3 |" in report
    assert "| hybrid | colloquial | 0.500 | 0.500 | 0.500 | 2 |" in report


def test_the_ecfr_gold_has_a_colloquial_slice():
    items, problems = ev.load_gold(ECFR_GOLD)
    assert problems == []
    colloquial = [item for item in items if item.slice == "colloquial"]
    assert len(colloquial) >= 30
    assert all(item.answerable and item.sections for item in colloquial)
