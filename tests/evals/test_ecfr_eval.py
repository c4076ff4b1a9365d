"""Retrieval and answers on the real eCFR text (47 CFR Parts 97 and 80 from
../shared/fcc-corpus), guarded by the `ecfr_gold` baseline: retrieval, and the trust
metrics of the answer modes stored with it (citations, support, numbers, abstention), and
the multiple-choice exam (data/eval/ecfr_exam.jsonl) when the baseline's config has `exam`,
and the summaries gold set (data/eval/ecfr_summaries.jsonl, in the config's `summary_modes`)
when it has `summaries`;
skipped where the shared corpus is absent."""

from __future__ import annotations

import pytest

import evals as ev
from tests.evals.conftest import (
    ECFR_EXAM,
    ECFR_GOLD,
    ECFR_SUMMARIES,
    cli_args,
    profile_config,
    run_cli,
)

PROFILE = ev.baseline_profile(ECFR_GOLD)
BASELINE = ev.load_baseline().get(PROFILE, {}).get("metrics", {})
RETRIEVAL_BASELINE = {key: entry for key, entry in BASELINE.items() if key.startswith("retrieval.")}
ANSWER_BASELINE = {key: entry for key, entry in BASELINE.items() if key.startswith("answer.")}

# One evaluation run shared by the module (its fixture): the gold set in two answer modes, 60
# exam items in two modes and 24 summaries, about 15 minutes on 2 cores; pytest's default
# --timeout (900 s) counts that setup against the module's first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def ecfr_run(shared_corpus, tmp_path_factory, chat_model):
    config = profile_config(PROFILE)
    corpus = [shared_corpus / "part97" / "txt", shared_corpus / "part80" / "txt"]
    argv = ["--gold", str(ECFR_GOLD), *cli_args(config)]
    for folder in corpus:
        argv += ["--corpus", str(folder)]
    if config.get("exam"):  # the multiple-choice exam, when the baseline was written with it
        argv += ["--exam", str(ECFR_EXAM)]
    if config.get("summaries"):  # the eCFR summaries gold set, when the baseline has it
        argv += ["--summaries", str(ECFR_SUMMARIES)]
    return run_cli(argv, tmp_path_factory.mktemp("eval-ecfr"), llm=chat_model)


def test_ecfr_gold_sections_exist_in_the_ingested_text(ecfr_run):
    assert ecfr_run.status == 0, ecfr_run.stdout
    assert ecfr_run.results["problems"] == []
    assert ecfr_run.results["config"]["ingest"]["files_skipped"] == 0


def test_ecfr_baseline_exists():
    assert RETRIEVAL_BASELINE, (
        f"data/eval/baseline.json has no {PROFILE!r} retrieval metrics: run the eCFR evaluation "
        "with --write-baseline (README, Evaluation)"
    )


def test_ecfr_answers_are_guarded():
    assert ANSWER_BASELINE, (
        f"data/eval/baseline.json has no {PROFILE!r} answer metrics: run the eCFR evaluation "
        "with answers and --write-baseline (README, Evaluation)"
    )


@pytest.mark.parametrize("metric", sorted(BASELINE))
def test_ecfr_metric_holds_its_baseline(ecfr_run, metric):
    value = ecfr_run.json_line.get(metric)
    failure = ev.check_metric(metric, value, BASELINE[metric])
    assert failure is None, failure
