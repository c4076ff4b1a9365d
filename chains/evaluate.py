"""Offline, deterministic evaluation of retrieval, answers, citations and summaries.

    python -m chains.evaluate --gold data/eval/gold.jsonl [--summaries data/eval/summaries.jsonl]
        [--corpus DIR ...] [--collection NAME] [--adapter PATH | --compare-adapter PATH]
        [--k N] [--mode dense|hybrid|bm25] [--limit N] [--summary-limit N] [--retrieval-only]
        [--out DIR] [--json] [--write-baseline | --check-baseline]

Retrieval is scored for dense, BM25 and the configured mode over every gold item; answers
(greedy, seeded) over at most `--limit` items, a fixed subsample, and summaries over the
first `--summary-limit`. No LLM judges anything: the metrics are in `chains.metrics`.
Results go to `--out` (default var/eval/<timestamp>): results.json (aggregate + one record
per item), report.md and metrics.png. `--json` ends stdout with one JSON line of the
aggregate metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chains import metrics
from core.settings import PROJECT_ROOT, get_settings

RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
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
)
SUMMARY_METRICS = ("rouge_l", "fact_coverage")
LATENCY_STAGES = ("retrieve_s", "first_token_s", "total_s")
# Lower is better for these; everything else guarded is higher-is-better.
LOWER_IS_BETTER = (
    "false_abstention_rate",
    "unsupported_numbers",
    "answers_with_unsupported_numbers",
)
GROUNDED_THRESHOLD = 0.5
DEFAULT_SEED = 1234
DEFAULT_MAX_NEW_TOKENS = 128
BASELINE_FILE = PROJECT_ROOT / "data" / "eval" / "baseline.json"


class EvaluationError(RuntimeError):
    """The evaluation cannot run; the message says what to do."""


# Gold data ---------------------------------------------------------------------------------


@dataclass
class GoldItem:
    id: str
    question: str
    sections: list[str]
    facts: list[str]
    answerable: bool
    reference: str | None = None
    line: int = 0


@dataclass
class SummaryItem:
    id: str
    source: str
    reference: str
    facts: list[str]
    line: int = 0


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, error) for every non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvaluationError(f"Cannot read {path}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as error:
            yield number, None, f"not valid JSON ({error.msg} at column {error.colno})"


def _string_list(record: dict, key: str, problems: list[str]) -> list[str]:
    value = record.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"'{key}' must be a list of non-empty strings")
        return []
    return [v.strip() for v in value]


def _required_string(record: dict, key: str, problems: list[str]) -> str:
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"'{key}' must be a non-empty string")
        return ""
    return value.strip()


def load_gold(path: Path | str) -> tuple[list[GoldItem], list[str]]:
    """Read and validate a gold JSONL file: the valid items and one message per bad line."""
    path = Path(path)
    items: list[GoldItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, record, error in _read_jsonl(path):
        where = f"{path}:{number}"
        if error or not isinstance(record, dict):
            problems.append(f"{where}: {error or 'each line must be a JSON object'}")
            continue
        found: list[str] = []
        item_id = _required_string(record, "id", found)
        question = _required_string(record, "question", found)
        sections = _string_list(record, "sections", found)
        facts = _string_list(record, "facts", found)
        answerable = record.get("answerable", True)
        if not isinstance(answerable, bool):
            found.append("'answerable' must be true or false")
        reference = record.get("reference")
        if reference is not None and not isinstance(reference, str):
            found.append("'reference' must be a string")
        if answerable is True and not sections and not found:
            found.append("an answerable item needs at least one gold section")
        if item_id in seen:
            found.append(f"duplicate id {item_id!r} (first on line {seen[item_id]})")
        if found:
            problems.extend(f"{where}: {message}" for message in found)
            continue
        seen[item_id] = number
        items.append(
            GoldItem(item_id, question, sections, facts, answerable, reference or None, number)
        )
    return items, problems


def load_summaries(path: Path | str) -> tuple[list[SummaryItem], list[str]]:
    path = Path(path)
    items: list[SummaryItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, record, error in _read_jsonl(path):
        where = f"{path}:{number}"
        if error or not isinstance(record, dict):
            problems.append(f"{where}: {error or 'each line must be a JSON object'}")
            continue
        found: list[str] = []
        item_id = _required_string(record, "id", found)
        source = _required_string(record, "source", found)
        reference = _required_string(record, "reference", found)
        facts = _string_list(record, "facts", found)
        if item_id in seen:
            found.append(f"duplicate id {item_id!r}")
        if found:
            problems.extend(f"{where}: {message}" for message in found)
            continue
        seen.add(item_id)
        items.append(SummaryItem(item_id, source, reference, facts, number))
    return items, problems


def subsample(items: Sequence[GoldItem], limit: int | None) -> list[GoldItem]:
    """At most `limit` items, the same ones every run (ordered by a hash of the id), keeping
    the share of unanswerable items; returned in file order."""
    if limit is None or limit >= len(items):
        return list(items)
    ranked = sorted(items, key=lambda item: hashlib.sha256(item.id.encode()).hexdigest())
    unanswerable = [item for item in ranked if not item.answerable]
    answerable = [item for item in ranked if item.answerable]
    n_unanswerable = min(len(unanswerable), round(limit * len(unanswerable) / len(items)))
    if unanswerable and limit >= 2 and n_unanswerable == 0:
        n_unanswerable = 1
    chosen = {
        item.id for item in answerable[: limit - n_unanswerable] + unanswerable[:n_unanswerable]
    }
    return [item for item in items if item.id in chosen]


# The corpus as the collection holds it -----------------------------------------------------


@dataclass
class CorpusIndex:
    """Which sources hold which sections, read from the collection's chunk metadata."""

    sources_by_key: dict[str, set[str]] = field(default_factory=dict)
    chunks: int = 0

    def add(self, source: str | None, section: str | None) -> None:
        self.chunks += 1
        if source:
            for key in metrics.chunk_keys(source, section):
                self.sources_by_key.setdefault(key, set()).add(source)

    def knows(self, gold_id: str) -> bool:
        return metrics.gold_key(gold_id) in self.sources_by_key

    def sources_for(self, gold_ids: Iterable[str]) -> list[str]:
        found: set[str] = set()
        for gold_id in gold_ids:
            found |= self.sources_by_key.get(metrics.gold_key(gold_id), set())
        return sorted(found)

    @property
    def sources(self) -> set[str]:
        return set().union(*self.sources_by_key.values()) if self.sources_by_key else set()


def read_corpus_index(collection: str) -> CorpusIndex:
    from core.store import METADATA_KEY, get_client

    client = get_client()
    if not client.collection_exists(collection):
        raise EvaluationError(
            f"Collection {collection!r} does not exist. Leave out --collection to ingest --corpus "
            "into an evaluation collection, or ingest first: python -m ingest <folder>."
        )
    index = CorpusIndex()
    offset = None
    while True:
        points, offset = client.scroll(
            collection,
            limit=1024,
            offset=offset,
            with_payload=[f"{METADATA_KEY}.source", f"{METADATA_KEY}.section"],
            with_vectors=False,
        )
        for point in points:
            meta = (point.payload or {}).get(METADATA_KEY) or {}
            index.add(meta.get("source"), meta.get("section"))
        if offset is None:
            return index


def unknown_gold_sections(items: Iterable[GoldItem], index: CorpusIndex) -> list[str]:
    """One message per answerable item whose gold sections the corpus does not hold."""
    problems = []
    for item in items:
        missing = [s for s in item.sections if not index.knows(s)]
        if item.answerable and missing:
            problems.append(
                f"line {item.line} ({item.id}): gold section(s) not in the corpus: {', '.join(missing)}"
            )
    return problems


def corpus_collection_name(paths: Sequence[Path]) -> str:
    """The evaluation collection for these corpus folders and this embedding model
    (ingestion itself re-chunks files whose chunking settings changed)."""
    key = json.dumps(
        {
            "paths": sorted(str(p.resolve()) for p in paths),
            "embedding": get_settings().embedding_model,
        },
        sort_keys=True,
    )
    return "eval_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def ingest_corpus(paths: Sequence[Path], collection: str, progress: bool) -> dict:
    from ingest.pipeline import ingest_paths

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise EvaluationError(f"Corpus path(s) not found: {', '.join(missing)}")
    report = ingest_paths(list(paths), collection=collection, progress=progress)
    return report.to_dict()


# Options -----------------------------------------------------------------------------------


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
    retrieval_only: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = DEFAULT_SEED
    progress: bool = True

    def resolved(self) -> EvalOptions:
        settings = get_settings()
        return EvalOptions(
            **{
                **asdict(self),
                "corpus": self.corpus or [settings.corpus_path],
                "k": self.k or settings.retrieval_k,
                "mode": self.mode or settings.retrieval_mode,
            }
        )

    def variants(self) -> list[tuple[str, Path | None]]:
        """(name, adapter path) for each model the answers are generated with."""
        if self.compare_adapter:
            return [("base", None), ("adapter", self.compare_adapter)]
        if self.adapter:
            return [("adapter", self.adapter)]
        return [("base", None)]

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
        }


# Running -----------------------------------------------------------------------------------


@dataclass
class EvalResult:
    config: dict
    aggregate: dict[str, float | None]
    counts: dict[str, int]
    items: list[dict]
    summaries: list[dict]
    problems: list[str]

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "aggregate": self.aggregate,
            "counts": self.counts,
            "problems": self.problems,
            "items": self.items,
            "summaries": self.summaries,
        }


def _bar(iterable, progress: bool, desc: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(
        iterable, desc=desc, total=total, disable=not progress, file=sys.stderr, leave=False
    )


def retrieval_modes(configured: str) -> list[str]:
    return list(dict.fromkeys(["dense", "bm25", configured]))


def evaluate_retrieval(
    retriever: Any,
    items: Sequence[GoldItem],
    index: CorpusIndex,
    k: int,
    modes: Sequence[str],
    progress: bool,
) -> dict[str, dict]:
    """Per item id: for each mode the ranked chunks, scores and section/source metrics."""
    records: dict[str, dict] = {}
    for item in _bar(items, progress, "retrieval"):
        gold_sources = index.sources_for(item.sections)
        per_mode = {}
        for mode in modes:
            started = time.perf_counter()
            chunks = retriever.search(item.question, k=k, mode=mode, score_threshold=None)
            seconds = time.perf_counter() - started
            section_keys = [metrics.chunk_keys(c.source, c.section) for c in chunks]
            source_keys = [{c.source} for c in chunks]
            per_mode[mode] = {
                "retrieved": [
                    {
                        "id": str(c.id),
                        "source": c.source,
                        "section": c.section,
                        "score": None if c.score is None else round(float(c.score), 6),
                    }
                    for c in chunks
                ],
                "seconds": seconds,
                "section": metrics.retrieval_scores(
                    section_keys, item.sections if item.answerable else [], k
                ),
                "source": metrics.retrieval_scores(
                    source_keys, gold_sources if item.answerable else [], k
                ),
            }
        records[item.id] = {"gold_sources": gold_sources, "modes": per_mode}
    return records


def score_answer(item: GoldItem, listed: Sequence[Any], raw: str, result: Any) -> dict:
    """Every answer metric of one answer against its gold item.

    `listed` are the sources the model saw (numbered as in its context), `raw` the text it
    generated; `result` the chain's RagResult, whose answer has invalid markers removed.
    Citations and groundedness are judged on the raw text, facts and F1 on the final answer.
    """
    listed = sorted(listed, key=lambda s: s.n)
    keys = [metrics.chunk_keys(s.source, s.section) for s in listed]
    texts = [s.text for s in listed]
    abstained = bool(result.abstained) or metrics.looks_like_abstention(result.answer)
    final = "" if abstained else (result.answer or "")
    record: dict[str, Any] = {
        "answer": result.answer,
        "raw_answer": raw,
        "abstained": abstained,
        "error": result.error,
        "sources": [
            {"n": s.n, "source": s.source, "section": s.section, "score": s.score} for s in listed
        ],
        "cited": sorted(set(metrics.cited_numbers(raw))),
        "timings": dict(result.timings or {}),
        "usage": dict(result.usage or {}),
    }
    scores: dict[str, Any] = {}
    if item.answerable:
        scores["key_fact_recall"] = metrics.key_fact_recall(final, item.facts)
        scores["token_f1"] = metrics.token_f1(final, item.reference)
    if not abstained:
        scores["citation_validity"] = metrics.citation_validity(raw, len(listed))
        scores["cited_answer_rate"] = float(bool(metrics.cited_numbers(raw)))
        if item.answerable:
            scores["citation_precision"] = metrics.citation_precision(raw, keys, item.sections)
        grounded = metrics.groundedness(raw, texts, GROUNDED_THRESHOLD)
        scores["grounded_cited"] = grounded["grounded_cited"]
        scores["grounded_retrieved"] = grounded["grounded_retrieved"]
        unsupported = metrics.unsupported_numbers(raw, [*texts, item.question])
        record["unsupported_numbers"] = unsupported
        scores["unsupported_numbers"] = float(len(unsupported))
        scores["answers_with_unsupported_numbers"] = float(bool(unsupported))
    record["metrics"] = scores
    return record


def answer_one(rag: Any, item: GoldItem, options: EvalOptions) -> dict:
    """One seeded, greedy answer through the chain's stream (which shows the raw tokens)."""
    from transformers import set_seed

    set_seed(options.seed)
    listed, tokens, result = [], [], None
    for kind, payload in rag.stream(
        item.question,
        k=options.k,
        mode=options.mode,
        max_new_tokens=options.max_new_tokens,
        temperature=0.0,
    ):
        if kind == "retrieved":
            listed = payload
        elif kind == "token":
            tokens.append(payload)
        elif kind == "done":
            result = payload
    return score_answer(item, listed, "".join(tokens), result)


def evaluate_answers(
    rag: Any, items: Sequence[GoldItem], options: EvalOptions, desc: str
) -> dict[str, dict]:
    return {item.id: answer_one(rag, item, options) for item in _bar(items, options.progress, desc)}


def evaluate_summaries(
    summarizer: Any, items: Sequence[SummaryItem], options: EvalOptions, desc: str
) -> list[dict]:
    """Summarize each gold document (greedy, seeded); a failure is recorded, not raised."""
    from transformers import set_seed

    records = []
    for item in _bar(items, options.progress, desc):
        set_seed(options.seed)
        started = time.perf_counter()
        try:
            summary, error = summarizer.summarize_source(item.source).summary, None
        except Exception as exc:  # one failing document must not end the evaluation
            summary, error = "", f"{type(exc).__name__}: {exc}"
        records.append(
            {
                "id": item.id,
                "source": item.source,
                "summary": summary,
                "error": error,
                "seconds": time.perf_counter() - started,
                "metrics": {
                    "rouge_l": metrics.rouge_l(summary, item.reference)["f1"],
                    "fact_coverage": metrics.key_fact_recall(summary, item.facts),
                },
            }
        )
    return records


def _adapter_swapper(llm: Any):
    """Switch the loaded model between the bare base and adapters, loading each once."""
    loaded: dict[Path, str] = {}
    before = llm.active_adapter

    def use(path: Path | None) -> None:
        if path is None:
            llm.set_adapter(None)
            return
        path = Path(path)
        if path not in loaded:
            loaded[path] = llm.load_adapter(path, name=f"eval_{len(loaded)}")
        llm.set_adapter(loaded[path])

    def restore() -> None:
        for name in loaded.values():
            llm.unload_adapter(name)
        if before in llm.adapters:
            llm.set_adapter(before)

    return use, restore


def prepare_collection(options: EvalOptions) -> tuple[str, dict | None]:
    """The collection to evaluate, and the ingest report when the corpus was ingested."""
    if options.collection:
        return options.collection, None
    collection = corpus_collection_name(options.corpus)
    return collection, ingest_corpus(options.corpus, collection, options.progress)


def generate(
    llm: Any,
    retriever: Any,
    answer_items: Sequence[GoldItem],
    summary_items: Sequence[SummaryItem],
    options: EvalOptions,
) -> tuple[dict[str, dict[str, dict]], dict[str, list[dict]]]:
    """Answers and summaries by each variant (base model, adapter), with the loaded model."""
    from chains.rag import RagChain
    from chains.summarize import Summarizer

    answers: dict[str, dict[str, dict]] = {}
    summaries: dict[str, list[dict]] = {}
    use, restore = _adapter_swapper(llm)
    try:
        for name, adapter in options.variants():
            use(adapter)
            rag = RagChain(llm, retriever)
            answers[name] = evaluate_answers(rag, answer_items, options, f"answers ({name})")
            if summary_items:
                summarizer = Summarizer(llm, retriever, max_new_tokens=options.max_new_tokens)
                summaries[name] = evaluate_summaries(
                    summarizer, summary_items, options, f"summaries ({name})"
                )
    finally:
        restore()
    return answers, summaries


def run_evaluation(options: EvalOptions, llm: Any = None) -> EvalResult:
    """The whole evaluation. `llm` is an already loaded QLoRAChatModel (else one is loaded)."""
    from chains.retrieval import Retriever

    options = options.resolved()
    items, problems = load_gold(options.gold)
    if not items:
        raise EvaluationError(f"{options.gold} holds no valid gold item:\n" + "\n".join(problems))
    summary_items: list[SummaryItem] = []
    if options.summaries and not options.retrieval_only:
        summary_items, summary_problems = load_summaries(options.summaries)
        problems += summary_problems

    collection, ingest_report = prepare_collection(options)
    index = read_corpus_index(collection)
    problems += unknown_gold_sections(items, index)
    for summary in summary_items:
        if summary.source not in index.sources:
            problems.append(
                f"{options.summaries}:{summary.line} ({summary.id}): "
                f"source {summary.source!r} is not in the corpus"
            )
    summary_items = [s for s in summary_items if s.source in index.sources]

    retriever = Retriever(collection)
    modes = retrieval_modes(options.mode)
    retrieval = evaluate_retrieval(retriever, items, index, options.k, modes, options.progress)

    answer_items = [] if options.retrieval_only else subsample(items, options.limit)
    summary_items = summary_items[: options.summary_limit]
    answers: dict[str, dict[str, dict]] = {}
    summaries: dict[str, list[dict]] = {}
    if answer_items or summary_items:
        if llm is None:
            from chains.llm import QLoRAChatModel

            llm = QLoRAChatModel.load(temperature=0.0)
        answers, summaries = generate(llm, retriever, answer_items, summary_items, options)

    aggregate, counts = aggregate_metrics(items, retrieval, modes, answers, summaries)
    config = {
        **options.config(),
        "gold": str(options.gold),
        "summaries_file": str(options.summaries) if options.summaries else None,
        "collection": collection,
        "corpus": [str(p) for p in options.corpus] if ingest_report else None,
        "ingest": ingest_report,
        "corpus_chunks": index.chunks,
        "variants": {name: str(path) if path else None for name, path in options.variants()}
        if answers
        else {},
        "model": llm.info() if llm is not None else None,
        "items": len(items),
        "answer_items": len(answer_items),
    }
    records = []
    for item in items:
        record = {**asdict(item), "retrieval": retrieval[item.id]}
        record["answers"] = {
            name: per_item[item.id] for name, per_item in answers.items() if item.id in per_item
        }
        records.append(record)
    flat_summaries = [{"variant": name, **s} for name, rows in summaries.items() for s in rows]
    return EvalResult(config, aggregate, counts, records, flat_summaries, problems)


def aggregate_metrics(
    items: Sequence[GoldItem],
    retrieval: dict[str, dict],
    modes: Sequence[str],
    answers: dict[str, dict[str, dict]],
    summaries: dict[str, list[dict]],
) -> tuple[dict[str, float | None], dict[str, int]]:
    """Flat `family.variant.metric` means, and how many items each mean is over."""
    aggregate: dict[str, float | None] = {}
    counts: dict[str, int] = {}

    def put(key: str, values: Iterable[float | None]) -> None:
        present = [v for v in values if v is not None]
        aggregate[key] = metrics.mean(present)
        counts[key] = len(present)

    for mode in modes:
        for level in LEVELS:
            scored = [retrieval[i.id]["modes"][mode][level] for i in items]
            for name in RETRIEVAL_METRICS:
                put(f"retrieval.{mode}.{level}.{name}", [s[name] if s else None for s in scored])
        latency = metrics.latency_summary(
            [retrieval[i.id]["modes"][mode]["seconds"] for i in items]
        )
        for stat in ("p50", "p95"):
            aggregate[f"latency.retrieval.{mode}.{stat}"] = latency[stat]

    by_id = {item.id: item for item in items}
    for variant, per_item in answers.items():
        records = list(per_item.values())
        for name in ANSWER_METRICS:
            if name in ("abstention_accuracy", "false_abstention_rate"):
                continue
            put(f"answer.{variant}.{name}", [r["metrics"].get(name) for r in records])
        pairs = [(by_id[i].answerable, r["abstained"]) for i, r in per_item.items()]
        abstention = metrics.abstention_scores(pairs)
        for name, value in abstention.items():
            aggregate[f"answer.{variant}.{name}"] = value
        counts[f"answer.{variant}.abstention_accuracy"] = sum(not a for a, _ in pairs)
        counts[f"answer.{variant}.false_abstention_rate"] = sum(a for a, _ in pairs)
        for stage in LATENCY_STAGES:
            latency = metrics.latency_summary([r["timings"].get(stage) for r in records])
            for stat in ("p50", "p95"):
                aggregate[f"latency.{variant}.{stage}.{stat}"] = latency[stat]
    for variant, rows in summaries.items():
        for name in SUMMARY_METRICS:
            put(f"summary.{variant}.{name}", [r["metrics"][name] for r in rows])
        aggregate[f"latency.{variant}.summary_s.p50"] = metrics.percentile(
            [r["seconds"] for r in rows], 50
        )
    return aggregate, counts


# Baseline ----------------------------------------------------------------------------------


def guarded(key: str) -> bool:
    return not key.startswith("latency.")


def higher_is_better(key: str) -> bool:
    return key.rsplit(".", 1)[-1] not in LOWER_IS_BETTER


# Per-item scores that vary continuously (a changed answer moves them a little), and rates
# bounded by 1; the rest of the guarded metrics are shares of items (0 or 1 each).
CONTINUOUS_METRICS = ("token_f1", "rouge_l", "grounded_cited", "grounded_retrieved")
RATE_METRICS = ("false_abstention_rate", "answers_with_unsupported_numbers")


def default_tolerance(key: str, count: int) -> float:
    """Room for one retrieval item or two generated items to change on another machine (a
    token flipped early in a greedy answer changes the rest); 0.05 for text-similarity
    scores; at least 0.02."""
    if key.rsplit(".", 1)[-1] in CONTINUOUS_METRICS:
        return 0.05
    if not count:
        return 0.05
    items = 1 if key.startswith("retrieval.") else 2
    return round(max(0.02, items / count), 4)


def can_fail(key: str, entry: dict) -> bool:
    """False when no value could cross the tolerance (a share already at 0, say): such a
    guard would be a test that cannot fail, so it is left out of the baseline."""
    if entry.get("higher_is_better", True):
        return entry["baseline"] - entry["tolerance"] > 0
    if key.rsplit(".", 1)[-1] in RATE_METRICS:
        return entry["baseline"] + entry["tolerance"] < 1
    return True


def load_baseline(path: Path = BASELINE_FILE) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def baseline_failures(aggregate: dict[str, float | None], entries: dict[str, dict]) -> list[str]:
    """One message per metric that fell below its baseline by more than its tolerance."""
    failures = []
    for key, entry in sorted(entries.items()):
        message = check_metric(key, aggregate.get(key), entry)
        if message:
            failures.append(message)
    return failures


def check_metric(key: str, value: float | None, entry: dict) -> str | None:
    baseline, tolerance = entry["baseline"], entry["tolerance"]
    if value is None:
        return f"{key}: no value (baseline {baseline}); the evaluation did not produce it"
    if entry.get("higher_is_better", True):
        if value < baseline - tolerance:
            return (
                f"{key} = {value:.4f} fell below baseline {baseline:.4f} by more than {tolerance}"
            )
    elif value > baseline + tolerance:
        return f"{key} = {value:.4f} rose above baseline {baseline:.4f} by more than {tolerance} (lower is better)"
    return None


def write_baseline(result: EvalResult, profile: str, path: Path = BASELINE_FILE) -> dict:
    """Store this run's metrics as `profile`'s baseline, keeping hand-set tolerances.

    Latency is not guarded (it is the machine's), nor a metric that cannot fail."""
    document = load_baseline(path)
    old = document.get(profile, {}).get("metrics", {})
    entries = {}
    for key, value in sorted(result.aggregate.items()):
        if value is None or not guarded(key):
            continue
        entry = {
            "baseline": round(value, 4),
            "tolerance": old.get(key, {}).get(
                "tolerance", default_tolerance(key, result.counts.get(key, 0))
            ),
        }
        if not higher_is_better(key):
            entry["higher_is_better"] = False
        if can_fail(key, entry):
            entries[key] = entry
    config = {k: v for k, v in result.config.items() if k in EvalOptions(gold=Path()).config()}
    document[profile] = {"gold": result.config["gold"], "config": config, "metrics": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return document[profile]


def baseline_profile(gold: Path) -> str:
    return Path(gold).stem


# Output ------------------------------------------------------------------------------------


def write_outputs(result: EvalResult, out: Path) -> None:
    from chains.eval_report import render_chart, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    (out / "report.md").write_text(render_markdown(result), encoding="utf-8")
    render_chart(result, out / "metrics.png")


def default_out_dir() -> Path:
    return PROJECT_ROOT / "var" / "eval" / datetime.now().strftime("%Y%m%d-%H%M%S")


def json_line(aggregate: dict) -> str:
    return json.dumps(
        {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(aggregate.items())}
    )


# CLI ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chains.evaluate",
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
        help="folder(s) to ingest into the evaluation collection (default: the sample corpus); repeat for several",
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
        "--retrieval-only", action="store_true", help="score retrieval only (no model is loaded)"
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
        retrieval_only=args.retrieval_only,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        progress=not args.no_progress,
    )
    try:
        result = run_evaluation(options, llm=llm)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    from core.store import close_clients

    try:
        status = main()
    finally:
        close_clients()  # before interpreter shutdown, which the embedded store's __del__ trips over
    raise SystemExit(status)
