"""Offline, deterministic evaluation of the chains: gold data, runner, metrics, baseline, report.

`fcc-rag evaluate` (evals/cli.py) is the command; `finetune test` scores with `evals.metrics`.
"""

from evals import metrics
from evals.baseline import (
    baseline_failures,
    baseline_profile,
    check_metric,
    load_baseline,
    write_baseline,
)
from evals.cli import main
from evals.exam import ExamItem, answered_right, load_exam
from evals.gold import GoldItem, SummaryItem, load_gold, load_summaries, subsample
from evals.runner import (
    CorpusIndex,
    EvalOptions,
    aggregate_metrics,
    evaluate_answers,
    run_evaluation,
    unknown_gold_sections,
    write_outputs,
)
from evals.schema import (
    ANSWER_METRICS,
    LATENCY_STAGES,
    LEVELS,
    RETRIEVAL_METRICS,
    RETRIEVAL_MODES,
    SUMMARY_METRICS,
    EvalResult,
    EvaluationError,
)

__all__ = [
    "ANSWER_METRICS",
    "LATENCY_STAGES",
    "LEVELS",
    "RETRIEVAL_METRICS",
    "RETRIEVAL_MODES",
    "SUMMARY_METRICS",
    "CorpusIndex",
    "ExamItem",
    "EvalOptions",
    "EvalResult",
    "EvaluationError",
    "GoldItem",
    "SummaryItem",
    "aggregate_metrics",
    "answered_right",
    "baseline_failures",
    "baseline_profile",
    "check_metric",
    "evaluate_answers",
    "load_baseline",
    "load_exam",
    "load_gold",
    "load_summaries",
    "main",
    "metrics",
    "run_evaluation",
    "subsample",
    "unknown_gold_sections",
    "write_baseline",
    "write_outputs",
]
