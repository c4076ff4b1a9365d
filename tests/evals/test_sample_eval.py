"""Guarded evaluation on the sample corpus: no metric may fall below its checked-in baseline
(data/eval/baseline.json) by more than its tolerance. Refresh the baseline after an intended
change with the command in the README's Evaluation section."""

from __future__ import annotations

import pytest

import evals as ev
from tests.evals.conftest import GOLD, SUMMARIES

PROFILE = ev.baseline_profile(GOLD)
BASELINE = ev.load_baseline().get(PROFILE, {}).get("metrics", {})

# The shared evaluation run (conftest's sample_run: answers and 10 summaries) is set up inside
# the first test, within pytest's --timeout (900 s); it can take longer on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_cli_succeeds_and_writes_its_outputs(sample_run):
    assert sample_run.status == 0, sample_run.stdout
    assert (sample_run.out / "report.md").read_text().startswith("# Evaluation report")
    assert (sample_run.out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    item = sample_run.results["items"][0]
    for mode in ("dense", "bm25", "hybrid"):
        retrieved = item["retrieval"]["modes"][mode]["retrieved"]
        assert retrieved and {"id", "source", "section", "score"} <= set(retrieved[0])


def test_json_line_has_every_metric_key(sample_run):
    line = sample_run.json_line
    expected = {
        f"retrieval.{mode}.{level}.{name}"
        for mode in ev.RETRIEVAL_MODES
        for level in ev.LEVELS
        for name in ev.RETRIEVAL_METRICS
    }
    expected |= {f"answer.base.{name}" for name in ev.ANSWER_METRICS}
    expected |= {
        f"latency.base.{stage}.{stat}" for stage in ev.LATENCY_STAGES for stat in ("p50", "p95")
    }
    expected |= {f"latency.retrieval.{mode}.p50" for mode in ev.RETRIEVAL_MODES}
    if SUMMARIES.exists():  # one summary variant per --summary-modes mode ("base" for one)
        modes = sample_run.results["config"].get("summary_modes") or []
        variants = [f"base/{mode}" for mode in modes] if len(modes) > 1 else ["base"]
        expected |= {f"summary.{v}.{name}" for v in variants for name in ev.SUMMARY_METRICS}
    assert expected <= set(line), sorted(expected - set(line))
    aggregate = sample_run.results["aggregate"]
    assert set(line) == set(aggregate)
    for key, value in aggregate.items():
        assert line[key] == (None if value is None else pytest.approx(value, abs=1e-6)), key


def test_gold_sections_and_summary_sources_exist_in_the_corpus(sample_run):
    assert sample_run.results["problems"] == []


def test_every_answered_item_has_an_answer_or_abstains(sample_run):
    answered = [item["answers"]["base"] for item in sample_run.results["items"] if item["answers"]]
    assert len(answered) == sample_run.results["config"]["answer_items"] > 0
    for answer in answered:
        assert answer["error"] is None
        assert answer["abstained"] or answer["answer"].strip()


def test_a_baseline_exists_for_the_sample_gold():
    assert BASELINE, (
        f"data/eval/baseline.json has no {PROFILE!r} metrics: run the evaluation with "
        "--write-baseline (README, Evaluation)"
    )


@pytest.mark.parametrize("metric", sorted(BASELINE))
def test_metric_holds_its_baseline(sample_run, metric):
    value = sample_run.results["aggregate"].get(metric)
    failure = ev.check_metric(metric, value, BASELINE[metric])
    assert failure is None, failure


def test_two_runs_give_identical_answers(sample_run, chat_model, corpus_collection):
    """Greedy and seeded: answering the same items again repeats the answers exactly."""
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    config = sample_run.results["config"]
    first = {i["id"]: i["answers"]["base"] for i in sample_run.results["items"] if i["answers"]}
    items, _ = ev.load_gold(GOLD)
    again_items = [item for item in items if item.id in first][:2]
    options = ev.EvalOptions(
        gold=GOLD,
        k=config["k"],
        mode=config["mode"],
        max_new_tokens=config["max_new_tokens"],
        seed=config["seed"],
        progress=False,
    )
    rag = RagChain(chat_model, Retriever(corpus_collection))
    again = ev.evaluate_answers(rag, again_items, options, "again")
    for item in again_items:
        assert again[item.id]["answer"] == first[item.id]["answer"], item.id
        assert again[item.id]["sources"] == first[item.id]["sources"], item.id
