"""Offline, deterministic evaluation of retrieval, answers, citations and summaries.

    fcc-rag evaluate --gold data/eval/gold.jsonl [--summaries data/eval/summaries.jsonl]
        [--corpus DIR ...] [--collection NAME] [--adapter PATH | --compare-adapter PATH]
        [--k N] [--mode dense|hybrid|bm25] [--limit N] [--summary-limit N] [--retrieval-only]
        [--out DIR] [--json] [--write-baseline | --check-baseline]
        [--exam data/eval/ecfr_exam.jsonl [--exam-limit N]]

Retrieval is scored for dense, BM25 and the configured mode over every gold item; answers
(greedy, seeded) over at most `--limit` items, a fixed subsample, and summaries over the
first `--summary-limit`; multiple-choice exam stems (`--exam`, `evals.exam`) in each answer
variant, beside BM25 and section-text baselines. No LLM judges anything: the metrics are in
`evals.metrics`.
Results go to `--out` (default var/eval/<timestamp>): results.json (aggregate + one record
per item), report.md and metrics.png. `--json` ends stdout with one JSON line of the
aggregate metrics.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, get_settings
from evals import metrics
from evals.gold import GoldItem, SummaryItem, load_gold, load_summaries, subsample
from evals.schema import (
    ANSWER_METRICS,
    GROUNDED_THRESHOLD,
    LATENCY_STAGES,
    LEVELS,
    RETRIEVAL_METRICS,
    SUMMARY_METRICS,
    EvalOptions,
    EvalResult,
    EvaluationError,
)

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


# Running -----------------------------------------------------------------------------------


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
    # A quote's pinpoint ("§ 97.313(b)") is a number the answer may repeat, not a claim.
    labels = [getattr(s, "pinpoint", None) or "" for s in listed]
    abstained = bool(result.abstained) or metrics.looks_like_abstention(result.answer)
    # The weak-match note is a warning before the quotes, not a claim: scored without it.
    claims = metrics.without_notes(raw)
    final = "" if abstained else metrics.without_notes(result.answer or "")
    numbers = metrics.cited_numbers(claims)
    record: dict[str, Any] = {
        "answer": result.answer,
        "raw_answer": raw,
        "abstained": abstained,
        "weak_match": bool(getattr(result, "weak_match", False)),
        "error": result.error,
        "sources": [
            {"n": s.n, "source": s.source, "section": s.section, "score": s.score} for s in listed
        ],
        "cited": sorted(set(numbers)),
        "timings": dict(result.timings or {}),
        "usage": dict(result.usage or {}),
        "answer_mode": getattr(result, "answer_mode", None),
        "draft": getattr(result, "draft", None),
        "dropped": getattr(result, "dropped", []),
    }
    scores: dict[str, Any] = {}
    if item.answerable:
        scores["key_fact_recall"] = metrics.key_fact_recall(final, item.facts)
        scores["token_f1"] = metrics.token_f1(final, item.reference)
    if not abstained:
        scores["citation_validity"] = metrics.citation_validity(claims, len(listed))
        scores["cited_answer_rate"] = float(bool(numbers))
        if item.answerable:
            scores["citation_precision"] = metrics.citation_precision(claims, keys, item.sections)
        sentences = metrics.without_pinpoints(claims, labels)
        grounded = metrics.groundedness(sentences, texts, GROUNDED_THRESHOLD)
        scores["grounded_cited"] = grounded["grounded_cited"]
        scores["grounded_retrieved"] = grounded["grounded_retrieved"]
        unsupported = metrics.unsupported_numbers(claims, [*texts, *labels, item.question])
        record["unsupported_numbers"] = unsupported
        scores["unsupported_numbers"] = float(len(unsupported))
        scores["answers_with_unsupported_numbers"] = float(bool(unsupported))
        scores["cited_valid_rate"] = float(
            bool(numbers) and all(1 <= n <= len(listed) for n in numbers)
        )
        backed = metrics.cited_support(sentences, texts, item.question, labels, GROUNDED_THRESHOLD)
        record["uncited_numbers"] = backed["uncited_numbers"]
        scores["supported_sentence_rate"] = backed["supported_sentence_rate"]
        scores["uncited_number_rate"] = float(bool(backed["uncited_numbers"]))
    record["metrics"] = scores
    return record


def answer_one(
    rag: Any, item: GoldItem, options: EvalOptions, answer_mode: str | None = None
) -> dict:
    """One seeded, greedy answer through the chain's stream: the text the user is shown."""
    from transformers import set_seed

    set_seed(options.seed)
    listed, tokens, result = [], [], None
    for kind, payload in rag.stream(
        item.question,
        k=options.k,
        mode=options.mode,
        answer_mode=answer_mode,
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
    rag: Any,
    items: Sequence[GoldItem],
    options: EvalOptions,
    desc: str,
    answer_mode: str | None = None,
) -> dict[str, dict]:
    return {
        item.id: answer_one(rag, item, options, answer_mode)
        for item in _bar(items, options.progress, desc)
    }


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
    from evals.summaries import evaluate_summary_modes

    answers: dict[str, dict[str, dict]] = {}
    summaries: dict[str, list[dict]] = {}
    use, restore = _adapter_swapper(llm)
    try:
        summarized: set[Path | None] = set()
        for name, adapter, answer_mode in options.variants():
            use(adapter)
            rag = RagChain(llm, retriever)
            answers[name] = evaluate_answers(
                rag, answer_items, options, f"answers ({name})", answer_mode
            )
            if summary_items and adapter not in summarized:
                summarized.add(adapter)
                model = name.split("/")[0]  # summary variants: <model>[/<summary mode>]
                summaries.update(
                    evaluate_summary_modes(llm, retriever, summary_items, options, model, _bar)
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
    exam = None
    if options.exam and not options.retrieval_only:
        from evals.exam import run_exam

        exam = run_exam(options, llm, retriever, collection, index)
        problems += exam.problems

    aggregate, counts = aggregate_metrics(items, retrieval, modes, answers, summaries)
    if exam:
        aggregate.update(exam.aggregate)
        counts.update(exam.counts)
    config = {
        **options.config(),
        "gold": str(options.gold),
        "summaries_file": str(options.summaries) if options.summaries else None,
        "collection": collection,
        "corpus": [str(p) for p in options.corpus] if ingest_report else None,
        "ingest": ingest_report,
        "corpus_chunks": index.chunks,
        "variants": {name: str(path) if path else None for name, path, _ in options.variants()}
        if answers
        else {},
        "model": llm.info() if llm is not None else None,
        "items": len(items),
        "answer_items": len(answer_items),
        **(exam.config if exam else {}),
    }
    records = []
    for item in items:
        record = {**asdict(item), "retrieval": retrieval[item.id]}
        record["answers"] = {
            name: per_item[item.id] for name, per_item in answers.items() if item.id in per_item
        }
        records.append(record)
    flat_summaries = [{"variant": name, **s} for name, rows in summaries.items() for s in rows]
    return EvalResult(
        config, aggregate, counts, records, flat_summaries, problems, exam.records if exam else []
    )


def _slices(items: Sequence[GoldItem]) -> dict[str, list[GoldItem]]:
    """The gold items of each named slice (`"slice": "colloquial"`), in file order."""
    found: dict[str, list[GoldItem]] = {}
    for item in items:
        if item.slice:
            found.setdefault(item.slice, []).append(item)
    return found


def aggregate_metrics(
    items: Sequence[GoldItem],
    retrieval: dict[str, dict],
    modes: Sequence[str],
    answers: dict[str, dict[str, dict]],
    summaries: dict[str, list[dict]],
) -> tuple[dict[str, float | None], dict[str, int]]:
    """Flat `family.variant.metric` means, and how many items each mean is over.

    Retrieval is also reported per named gold slice: `retrieval.hybrid.section.hit@1@colloquial`
    is hit@1 over the answerable items of the "colloquial" slice.
    """
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
        for slice_name, members in _slices(items).items():
            for level in LEVELS:
                scored = [retrieval[i.id]["modes"][mode][level] for i in members]
                if not any(scored):
                    continue  # a slice of unanswerable items has no retrieval score
                for name in RETRIEVAL_METRICS:
                    put(
                        f"retrieval.{mode}.{level}.{name}@{slice_name}",
                        [s[name] if s else None for s in scored],
                    )
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
            put(f"summary.{variant}.{name}", [r["metrics"].get(name) for r in rows])
        aggregate[f"latency.{variant}.summary_s.p50"] = metrics.percentile(
            [r["seconds"] for r in rows], 50
        )
    return aggregate, counts


# Output ------------------------------------------------------------------------------------


def write_outputs(result: EvalResult, out: Path) -> None:
    from evals.report import render_chart, render_markdown

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
