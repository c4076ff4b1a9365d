"""Answer latency and quality by answer mode and repetition penalty, side by side in one run.

    python -m bench.answers [--gold data/eval/ecfr_gold.jsonl] [--limit N] [--out bench/results]

Over the eCFR gold set (Parts 97 + 80 of ../shared/fcc-corpus, ingested into a temporary
store) the same loaded model answers every question in each configuration, the
configurations taking turns per question (so load on a shared machine hits them alike):
`raw` and `verified` at repetition penalty 1.0 and 1.1, and `extractive` (no model).
First token is when the first answer text reaches the caller (in verified mode: the first
verified sentence, or the quote); total is the whole answer. Quality uses `evals.metrics`:
key-fact recall, valid citations, sentences backed by their cited passage, answers with a
number no cited passage holds. Writes answers.md and answers.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from core.settings import PROJECT_ROOT, get_settings

FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
CONFIGS = [
    ("raw", 1.0),
    ("raw", 1.1),
    ("verified", 1.0),
    ("verified", 1.1),
    ("extractive", None),
]


def run_one(chain, question: str, mode: str, penalty: float | None) -> dict:
    gen = {"temperature": 0.0}
    if penalty is not None:
        gen["repetition_penalty"] = penalty
    started, first, shown, result = time.perf_counter(), None, [], None
    for kind, payload in chain.stream(question, answer_mode=mode, **gen):
        if kind == "token":
            first = first or time.perf_counter()
            shown.append(payload)
        elif kind == "done":
            result = payload
    ended = time.perf_counter()
    return {
        "first_token_s": (first or ended) - started,
        "total_s": ended - started,
        "answer": "".join(shown),
        "result": result,
    }


def score(item, run: dict) -> dict:
    from evals import metrics

    result = run["result"]
    abstained = bool(result.abstained)
    answer = "" if abstained else run["answer"]
    texts = [s.text for s in result.sources]
    labels = [s.pinpoint or "" for s in result.sources]
    row = {"abstained": abstained}
    if item.answerable:
        row["key_fact_recall"] = metrics.key_fact_recall(answer, item.facts)
    if not abstained:
        numbers = metrics.cited_numbers(answer)
        row["cited_valid"] = float(bool(numbers) and all(1 <= n <= len(texts) for n in numbers))
        backed = metrics.cited_support(answer, texts, item.question, labels)
        row["supported_sentences"] = backed["supported_sentence_rate"]
        row["uncited_number"] = float(bool(backed["uncited_numbers"]))
    return row


def summarize(rows: list[dict], items) -> dict:
    def mean(key, subset=None):
        values = [r[key] for r in (subset or rows) if r.get(key) is not None]
        return round(sum(values) / len(values), 3) if values else None

    answerable = [r for r, i in zip(rows, items, strict=True) if i.answerable]
    unanswerable = [r for r, i in zip(rows, items, strict=True) if not i.answerable]
    first = [r["first_token_s"] for r in rows]
    total = [r["total_s"] for r in rows]
    return {
        "key_fact_recall": mean("key_fact_recall", answerable),
        "cited_valid": mean("cited_valid"),
        "supported_sentences": mean("supported_sentences"),
        "uncited_number": mean("uncited_number"),
        "abstention": round(sum(r["abstained"] for r in unanswerable) / len(unanswerable), 3)
        if unanswerable
        else None,
        "false_abstention": round(sum(r["abstained"] for r in answerable) / len(answerable), 3)
        if answerable
        else None,
        "first_token_p50": round(statistics.median(first), 3),
        "first_token_p95": round(sorted(first)[int(0.95 * (len(first) - 1))], 3),
        "total_p50": round(statistics.median(total), 3),
        "total_p95": round(sorted(total)[int(0.95 * (len(total) - 1))], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.answers", description=__doc__)
    parser.add_argument("--gold", type=Path, default=PROJECT_ROOT / "data/eval/ecfr_gold.jsonl")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    corpus = [FCC / "part97" / "txt", FCC / "part80" / "txt"]
    if not all(path.exists() for path in corpus):
        print(f"skipped: {FCC} is not here")
        return 0
    from chains.llm import QLoRAChatModel
    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from core.store import close_clients
    from evals.gold import load_gold
    from ingest.pipeline import ingest_paths

    items, _ = load_gold(args.gold)
    items = items[: args.limit] if args.limit else items
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as store:
        get_settings().qdrant_path = Path(store)
        try:
            ingest_paths(corpus, collection="bench_answers", progress=False)
            llm = QLoRAChatModel(temperature=0.0)
            chain = RagChain(llm, Retriever("bench_answers"))
            run_one(chain, items[0].question, "verified", 1.0)  # warm-up: models, caches
            rows = {f"{m}@{p}" if p else m: [] for m, p in CONFIGS}
            for index, item in enumerate(items):
                order = CONFIGS[index % len(CONFIGS) :] + CONFIGS[: index % len(CONFIGS)]
                for mode, penalty in order:
                    run = run_one(chain, item.question, mode, penalty)
                    name = f"{mode}@{penalty}" if penalty else mode
                    rows[name].append(
                        {
                            "id": item.id,
                            "first_token_s": run["first_token_s"],
                            "total_s": run["total_s"],
                            "answer": run["answer"],
                            **score(item, run),
                        }
                    )
                print(f"[{index + 1}/{len(items)}] {item.id}", flush=True)
            model = llm.info()
        finally:
            close_clients()
    summary = {name: summarize(r, items) for name, r in rows.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answers.json").write_text(
        json.dumps({"model": model, "summary": summary, "rows": rows}, indent=1) + "\n"
    )
    header = [
        "configuration",
        "key-fact recall",
        "cited, all valid",
        "sentences backed by cited passage",
        "answers with an uncited number ↓",
        "abstention",
        "false abstention ↓",
        "first token p50 / p95 s",
        "total p50 / p95 s",
    ]
    lines = [
        "# Answers by mode and repetition penalty (eCFR Parts 97 + 80)",
        "",
        f"`python -m bench.answers`: {len(items)} gold items of `{args.gold.name}`, model "
        f"{model.get('model')} on {model.get('device')} ({model.get('dtype')}), greedy; "
        "configurations take turns per question in one process. CPU: 2 shared cores.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def cell(value):
        return "–" if value is None else f"{value:.2f}"

    for name, s in summary.items():
        lines.append(
            f"| {name} | {cell(s['key_fact_recall'])} | {cell(s['cited_valid'])} "
            f"| {cell(s['supported_sentences'])} | {cell(s['uncited_number'])} "
            f"| {cell(s['abstention'])} | {cell(s['false_abstention'])} "
            f"| {s['first_token_p50']:.2f} / {s['first_token_p95']:.2f} "
            f"| {s['total_p50']:.2f} / {s['total_p95']:.2f} |"
        )
    (args.out / "answers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
