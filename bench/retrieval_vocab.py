"""Query expansion for lay vocabulary, side by side (QUERY_EXPANSION).

    python -m bench.retrieval_vocab [--out bench/results] [--methods none,glossary,...]

Every method runs the real stack (embedded Qdrant, MiniLM, the keyword index) over the
same collections the evaluation builds: the eCFR gold set over ../shared/fcc-corpus Parts 97
and 80 (by slice: the original questions, the colloquial paraphrases, and the colloquial
questions written after the glossary was frozen, "blind") and the sample gold set over
data/corpus. Section level, k = 4, dense / BM25 / hybrid; the hybrid p50 latency per query.
Writes retrieval-vocab.md and retrieval-vocab.json.

Nothing here trains or tunes on ../shared: the glossary (data/glossary.tsv) is written by
hand, and the definitions are read from whatever collection is searched.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from core.settings import PROJECT_ROOT

FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
SETS = {
    "ecfr": (
        PROJECT_ROOT / "data" / "eval" / "ecfr_gold.jsonl",
        [FCC / "part97" / "txt", FCC / "part80" / "txt"],
    ),
    "sample": (PROJECT_ROOT / "data" / "eval" / "gold.jsonl", [PROJECT_ROOT / "data" / "corpus"]),
}
# Colloquial questions written after data/glossary.tsv was frozen (no glossary edit since).
BLIND = {f"e{n:03d}" for n in range(84, 98)}
K = 4
MODES = ("dense", "bm25", "hybrid")
# name -> QueryExpander arguments ("mode" is the QUERY_EXPANSION value).
METHODS: dict[str, dict] = {
    "none": {"mode": "none"},
    "glossary": {"mode": "glossary"},
    "definitions": {"mode": "definitions"},
    "both": {"mode": "both"},
    "definitions+question": {"mode": "definitions", "definition_min_cosine": 0.5},
    "glossary/rewrite": {"mode": "glossary", "dense": "rewrite"},
    "glossary/append": {"mode": "glossary", "dense": "append"},
    "glossary/inline": {"mode": "glossary", "dense": "inline"},
    "glossary/fuse": {"mode": "glossary", "dense": "fuse"},
    "glossary/ungated": {"mode": "glossary", "vocabulary_gaps": False},
    "glossary/sparse0.5": {"mode": "glossary", "sparse_weight": 0.5},
}
DEFAULT_METHODS = list(METHODS)


def prepare(name: str) -> tuple[str, list, object] | None:
    """The evaluation's collection for a gold set (ingested if needed), its items, index."""
    from evals.gold import load_gold
    from evals.runner import corpus_collection_name, ingest_corpus, read_corpus_index

    gold, corpus = SETS[name]
    if not all(path.exists() for path in corpus):
        return None
    collection = corpus_collection_name(corpus)
    ingest_corpus(corpus, collection, progress=False)
    items, problems = load_gold(gold)
    if problems:
        raise SystemExit("\n".join(problems))
    return collection, items, read_corpus_index(collection)


def slices(name: str, items: list) -> dict[str, list[str]]:
    answerable = [item for item in items if item.answerable]
    if name != "ecfr":
        return {"all": [item.id for item in answerable]}
    colloquial = [item.id for item in answerable if item.slice == "colloquial"]
    return {
        "all": [item.id for item in answerable],
        "original": [item.id for item in answerable if item.slice is None],
        "colloquial": colloquial,
        "colloquial, before the glossary froze": [i for i in colloquial if i not in BLIND],
        "colloquial, blind": [i for i in colloquial if i in BLIND],
    }


def run_method(collection: str, items: list, index, expander_args: dict) -> dict:
    from chains.glossary import QueryExpander
    from chains.retrieval import Retriever
    from evals.runner import evaluate_retrieval

    retriever = Retriever(collection)
    retriever.expander = QueryExpander(**expander_args)
    retriever.search("warm-up", k=K)  # loads the model and the collection's definitions
    records = evaluate_retrieval(retriever, items, index, K, MODES, progress=False)
    expansions = {}
    for item in items:
        expansion = retriever.expand_query(item.question)
        expansions[item.id] = expansion.to_dict()
    return {"records": records, "expansions": expansions}


def scores(records: dict, ids: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for mode in MODES:
        rows = [records[i]["modes"][mode]["section"] for i in ids]
        out[mode] = {
            metric: statistics.fmean(row[metric] for row in rows)
            for metric in ("hit@1", "hit@k", "mrr")
        }
        seconds = [records[i]["modes"][mode]["seconds"] for i in ids]
        out[mode]["p50_ms"] = statistics.median(seconds) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; use {list(METHODS)}")

    results: dict = {"k": K, "machine": platform.platform(), "sets": {}}
    for name in SETS:
        prepared = prepare(name)
        if prepared is None:
            print(f"{name}: corpus not found, skipped")
            continue
        collection, items, index = prepared
        groups = slices(name, items)
        per_set = results["sets"][name] = {
            "collection": collection,
            "chunks": index.chunks,
            "slices": {k: len(v) for k, v in groups.items()},
            "methods": {},
        }
        for label in methods:
            started = time.perf_counter()
            run = run_method(collection, items, index, METHODS[label])
            per_set["methods"][label] = {
                "args": METHODS[label],
                "slices": {slice_: scores(run["records"], ids) for slice_, ids in groups.items()},
                "misses": {
                    item.id: [
                        c["section"]
                        for c in run["records"][item.id]["modes"]["hybrid"]["retrieved"]
                    ]
                    for item in items
                    if item.answerable
                    and run["records"][item.id]["modes"]["hybrid"]["section"]["hit@1"] < 1
                },
                "expansions": {i: e for i, e in run["expansions"].items() if e["terms"]},
            }
            hybrid = per_set["methods"][label]["slices"]["all"]["hybrid"]
            print(
                f"{name:6s} {label:22s} hybrid hit@1 {hybrid['hit@1']:.3f} hit@4 "
                f"{hybrid['hit@k']:.3f} MRR {hybrid['mrr']:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval-vocab.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "retrieval-vocab.md").write_text(render(results))
    print(f"wrote {args.out / 'retrieval-vocab.md'}")
    return 0


def _cell(values: dict) -> str:
    return f"{values['hit@1']:.3f} / {values['hit@k']:.3f} / {values['mrr']:.3f}"


def render(results: dict) -> str:
    lines = [
        "# Query expansion for lay vocabulary",
        "",
        "`python -m bench.retrieval_vocab`: section level, k = 4, each cell hit@1 / hit@4 / "
        "MRR@4. The same collections as `python -m evals` (embedded Qdrant, all-MiniLM-L6-v2, "
        "the keyword index). `none` is the retrieval before this change.",
        "",
    ]
    for name, per_set in results["sets"].items():
        slices_ = per_set["slices"]
        title = "eCFR Parts 97 + 80" if name == "ecfr" else "Sample corpus (data/corpus)"
        lines += [
            f"## {title}: {per_set['chunks']} chunks; "
            + ", ".join(f"{k} {v}" for k, v in slices_.items()),
            "",
        ]
        for mode in ("hybrid", "dense", "bm25"):
            lines.append(f"**{mode}**" + (" (the default mode)" if mode == "hybrid" else ""))
            lines.append("")
            header = ["method", *slices_]
            if mode == "hybrid":
                header.append("p50 ms")
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            for label, method in per_set["methods"].items():
                row = [label] + [_cell(method["slices"][s][mode]) for s in slices_]
                if mode == "hybrid":
                    row.append(f"{method['slices']['all'][mode]['p50_ms']:.0f}")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    lines += [
        "Methods (a QUERY_EXPANSION value, or a variant of `glossary`): `glossary` adds the "
        "expansions of the `data/glossary.tsv` terms (lay words, abbreviations) that the "
        "collection itself seldom uses (in fewer than 1 chunk in 100); the added keywords "
        "weigh 1 in the sparse query, and the dense query is the normalized mean of the "
        "question's embedding and that of the question with each lay term replaced by its "
        "first expansion. Variants: `glossary/rewrite` embeds the rewritten question alone, "
        "`/append` the question with the terms appended, `/inline` each term in parentheses "
        "after the lay word, `/fuse` fuses the plain and the appended query's rankings (RRF), "
        "`/ungated` expands every glossary term the question uses, `/sparse0.5` weighs the "
        "added keywords 0.5. `definitions` reads the collection's definitions sections "
        '(chunks under a "Definitions" heading: § 97.3, § 80.5, § 15.3) at query time: an '
        "abbreviation the query uses adds its long form, and each word the documents (almost) "
        "never use adds the defined term whose definition sentence is closest to it (cosine "
        ">= 0.45); `definitions+question` also adds up to two terms whose definitions are "
        "closest to the whole question (cosine >= 0.5). `both`: the glossary, then the "
        "definitions for the words it left.",
        "",
        "Slices: `original` are the formal eCFR questions; `colloquial` the paraphrases as "
        "users ask them, of which `blind` (e084-e097) were written after the glossary was "
        "frozen and never used to change it or any setting; the other colloquial questions "
        "were in view while the glossary was written, so their gain is an upper bound.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
