"""What an evaluation produces: metric names, stages, the result record and its error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.settings import PROJECT_ROOT, SAMPLE_CORPUS, get_settings

RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
ANSWER_MODES = ("verified", "extractive", "raw")
RETRIEVAL_METRICS = ("hit@1", "hit@k", "recall@k", "mrr")
LEVELS = ("section", "source")
ANSWER_METRICS = (
    "key_fact_recall",
    "token_f1",
    "citation_validity",
    "citation_precision",
    "cited_answer_rate",
    "abstention_accuracy",
    "false_abstention_rate",
    "grounded_cited",
    "grounded_retrieved",
    "unsupported_numbers",
    "answers_with_unsupported_numbers",
    # The trust metrics: per answer, judged against the passages each sentence cites.
    "cited_valid_rate",  # cites, and every marker points at a listed passage
    "supported_sentence_rate",  # sentences backed by a passage they cite (text and numbers)
    "uncited_number_rate",  # answers with a number no cited passage nor the question holds
)
# Summaries (evals.summaries): fact_coverage is key-provision recall.
SUMMARY_METRICS = (
    "rouge_l",
    "fact_coverage",
    "cited_sentence_rate",
    "supported_sentence_rate",
    "summaries_with_unsupported_numbers",
    "summaries_with_invented_numbers",
    "repeated_sentences",
)
LATENCY_STAGES = ("retrieve_s", "first_token_s", "total_s")
# Lower is better for these; everything else guarded is higher-is-better.
LOWER_IS_BETTER = (
    "false_abstention_rate",
    "unsupported_numbers",
    "answers_with_unsupported_numbers",
    "uncited_number_rate",
    "summaries_with_unsupported_numbers",
    "summaries_with_invented_numbers",
    "repeated_sentences",
)
GROUNDED_THRESHOLD = 0.5
DEFAULT_SEED = 1234
DEFAULT_MAX_NEW_TOKENS = 128
BASELINE_FILE = PROJECT_ROOT / "data" / "eval" / "baseline.json"


class EvaluationError(RuntimeError):
    """The evaluation cannot run; the message says what to do."""


@dataclass
class EvalResult:
    config: dict
    aggregate: dict[str, float | None]
    counts: dict[str, int]
    items: list[dict]
    summaries: list[dict]
    problems: list[str]
    exam: list[dict] = field(default_factory=list)  # one record per exam item (evals.exam)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "aggregate": self.aggregate,
            "counts": self.counts,
            "problems": self.problems,
            "items": self.items,
            "summaries": self.summaries,
            "exam": self.exam,
        }


@dataclass
class EvalOptions:
    gold: Path
    summaries: Path | None = None
    corpus: list[Path] = field(default_factory=list)
    collection: str | None = None
    adapter: Path | None = None
    compare_adapter: Path | None = None
    k: int | None = None
    mode: str | None = None
    limit: int | None = None
    summary_limit: int | None = None
    # Summary modes to score (verified | extractive | raw); empty: the configured SUMMARY_MODE.
    # With several, summary variants are named "<model>/<mode>" (evals.summaries).
    summary_modes: list[str] = field(default_factory=list)
    retrieval_only: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = DEFAULT_SEED
    progress: bool = True
    # Answer modes to score (verified | extractive | raw); empty: the configured ANSWER_MODE.
    # With several, variants are named "<model>/<mode>" (e.g. "base/raw").
    answer_modes: list[str] = field(default_factory=list)
    # Multiple-choice exam JSONL (evals.exam): the stems answered in each variant; a fixed
    # subsample of at most `exam_limit` items.
    exam: Path | None = None
    exam_limit: int | None = None

    def resolved(self) -> EvalOptions:
        settings = get_settings()
        return EvalOptions(
            **{
                **asdict(self),
                # The sample gold set's corpus, not the served one (the eCFR text).
                "corpus": self.corpus or [SAMPLE_CORPUS],
                "k": self.k or settings.retrieval_k,
                "mode": self.mode or settings.retrieval_mode,
            }
        )

    def models(self) -> list[tuple[str, Path | None]]:
        """(name, adapter path) for each model the answers are generated with."""
        if self.compare_adapter:
            return [("base", None), ("adapter", self.compare_adapter)]
        if self.adapter:
            return [("adapter", self.adapter)]
        return [("base", None)]

    def variants(self) -> list[tuple[str, Path | None, str | None]]:
        """(name, adapter path, answer mode) for each set of answers."""
        if len(self.answer_modes) <= 1:
            mode = self.answer_modes[0] if self.answer_modes else None
            return [(name, path, mode) for name, path in self.models()]
        return [
            (f"{name}/{mode}", path, mode)
            for name, path in self.models()
            for mode in self.answer_modes
        ]

    def config(self) -> dict:
        """What the run depends on (recorded in results and baseline)."""
        return {
            "k": self.k,
            "mode": self.mode,
            "limit": self.limit,
            "summary_limit": self.summary_limit,
            "retrieval_only": self.retrieval_only,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "summaries": bool(self.summaries),
            "summary_modes": (list(self.summary_modes) or [get_settings().summary_mode])
            if self.summaries
            else [],
            "exam": bool(self.exam),
            "exam_limit": self.exam_limit,
            "answer_modes": list(self.answer_modes) or [get_settings().answer_mode],
        }
