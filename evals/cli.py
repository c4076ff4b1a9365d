"""`fcc-rag evaluate` (also `python -m evals`, `python -m chains.evaluate`).

fcc-rag evaluate --gold data/eval/gold.jsonl [--summaries data/eval/summaries.jsonl]
    [--corpus DIR ...] [--collection NAME] [--adapter PATH | --compare-adapter PATH]
    [--k N] [--mode dense|hybrid|bm25] [--limit N] [--summary-limit N] [--retrieval-only]
    [--out DIR] [--json] [--write-baseline | --check-baseline]
    [--exam data/eval/ecfr_exam.jsonl [--exam-limit N]]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import cli_errors
from core.settings import PROJECT_ROOT
from evals.baseline import baseline_failures, baseline_profile, load_baseline, write_baseline
from evals.runner import EvalOptions, default_out_dir, json_line, run_evaluation, write_outputs
from evals.schema import (
    ANSWER_MODES,
    BASELINE_FILE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SEED,
    RETRIEVAL_MODES,
)

# CLI ---------------------------------------------------------------------------------------


def _answer_modes(value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ANSWER_MODES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown answer mode(s) {', '.join(unknown)}; use {', '.join(ANSWER_MODES)}"
        )
    return list(dict.fromkeys(modes))


def _summary_modes(value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ANSWER_MODES]  # the same three names
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown summary mode(s) {', '.join(unknown)}; use {', '.join(ANSWER_MODES)}"
        )
    return list(dict.fromkeys(modes))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcc-rag evaluate",
        description="Evaluate retrieval, answers, citations and summaries against gold data.",
    )
    parser.add_argument(
        "--gold",
        type=Path,
        required=True,
        help="gold JSONL (id, question, sections, facts, answerable, reference)",
    )
    parser.add_argument(
        "--summaries", type=Path, help="summary gold JSONL (id, source, reference, facts)"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        action="append",
        help="folder(s) to ingest into the evaluation collection (default: the sample corpus, data/samples); repeat for several",
    )
    parser.add_argument(
        "--collection", help="evaluate an existing collection instead of ingesting --corpus"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--adapter", type=Path, help="answer with this LoRA adapter instead of the base model"
    )
    group.add_argument(
        "--compare-adapter",
        type=Path,
        help="answer with the base model and with this adapter, side by side",
    )
    parser.add_argument(
        "--k", type=int, help="chunks retrieved per question (default: RETRIEVAL_K)"
    )
    parser.add_argument(
        "--mode",
        choices=RETRIEVAL_MODES,
        help="retrieval mode for answers (default: RETRIEVAL_MODE); dense and bm25 are always scored too",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="answer at most N gold items (a fixed subsample); retrieval always scores all",
    )
    parser.add_argument(
        "--summary-limit", type=int, help="summarize at most the first N summary items"
    )
    parser.add_argument(
        "--summary-modes",
        type=_summary_modes,
        default=[],
        help="comma-separated summary modes to score side by side: verified, extractive, raw "
        "(default: SUMMARY_MODE); summary variants are then named <model>/<mode>",
    )
    parser.add_argument(
        "--retrieval-only", action="store_true", help="score retrieval only (no model is loaded)"
    )
    parser.add_argument(
        "--answer-modes",
        type=_answer_modes,
        default=[],
        help="comma-separated answer modes to score side by side: verified, extractive, raw "
        "(default: ANSWER_MODE); variants are then named <model>/<mode>",
    )
    parser.add_argument(
        "--exam",
        type=Path,
        help="multiple-choice exam JSONL: each stem answered in each answer variant, scored "
        "'answered right' beside BM25 top-3 and section-text baselines (evals/exam.py)",
    )
    parser.add_argument(
        "--exam-limit", type=int, help="answer at most N exam items (a fixed subsample)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="output folder (default: var/eval/<timestamp>)")
    parser.add_argument(
        "--json", action="store_true", help="end stdout with one JSON line of the aggregate metrics"
    )
    parser.add_argument(
        "--write-baseline",
        action="store_true",
        help=f"store these metrics as the baseline in {BASELINE_FILE.relative_to(PROJECT_ROOT)}",
    )
    parser.add_argument(
        "--check-baseline",
        action="store_true",
        help="exit 1 when a metric fell below its baseline by more than its tolerance",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None, llm: Any = None) -> int:
    args = build_parser().parse_args(argv)
    options = EvalOptions(
        gold=args.gold,
        summaries=args.summaries,
        corpus=args.corpus or [],
        collection=args.collection,
        adapter=args.adapter,
        compare_adapter=args.compare_adapter,
        k=args.k,
        mode=args.mode,
        limit=args.limit,
        summary_limit=args.summary_limit,
        summary_modes=args.summary_modes,
        retrieval_only=args.retrieval_only,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        progress=not args.no_progress,
        answer_modes=args.answer_modes,
        exam=args.exam,
        exam_limit=args.exam_limit,
    )
    result = run_evaluation(options, llm=llm)  # EvaluationError: one line, exit 2 (cli_errors)
    for problem in result.problems:
        print(f"gold problem: {problem}", file=sys.stderr)
    out = args.out or default_out_dir()
    write_outputs(result, out)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"Results: {out / 'results.json'}, {out / 'report.md'}, {out / 'metrics.png'}")
    status = 0
    profile = baseline_profile(args.gold)
    if args.write_baseline:
        write_baseline(result, profile)
        print(f"Baseline {profile!r} written to {BASELINE_FILE}")
    elif args.check_baseline:
        entries = load_baseline().get(profile, {}).get("metrics", {})
        failures = baseline_failures(result.aggregate, entries)
        for failure in failures:
            print(f"REGRESSION {failure}")
        status = 1 if failures else 0
    if args.json:
        with contextlib.suppress(BrokenPipeError):
            print(json_line(result.aggregate), flush=True)
    return status
