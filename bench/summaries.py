"""Summaries by mode, side by side in one run: one-section latency and the trust metrics.

    python -m bench.summaries [--modes raw,verified,extractive] [--limit N]
        [--ecfr-collection NAME] [--sample-collection NAME] [--base] [--out bench/results]

The same loaded model (the default: SmolLM2-135M-Instruct + LOCAL_ADAPTER_PATH's adapter, as
`python -m chains.summarize` serves it; `--base` for the bare base the evaluations use)
summarizes every document of both summary gold sets in each mode, the modes taking turns
per document (so load on a shared machine hits them alike):

- `data/eval/ecfr_summaries.jsonl`: one eCFR section each (Parts 97 + 80 of
  ../shared/fcc-corpus, ingested into a temporary store unless `--ecfr-collection` names an
  existing one): the one-section latency p50 / p95 and the metrics;
- `data/eval/summaries.jsonl`: the sample corpus's documents (several chunks, map-reduce).

Metrics are `evals.summaries`' (key-provision recall, sentences citing a valid [n],
sentences backed by the passage they cite, summaries with a number no cited passage holds or
one the document does not hold, repeated sentences), and how many model sentences the
verifier kept. Writes summaries.json and summaries.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.settings import PROJECT_ROOT, SAMPLE_CORPUS, get_settings

FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
ECFR_GOLD = PROJECT_ROOT / "data" / "eval" / "ecfr_summaries.jsonl"
SAMPLE_GOLD = PROJECT_ROOT / "data" / "eval" / "summaries.jsonl"
MODES = ("raw", "verified", "extractive")
METRICS = (
    "fact_coverage",
    "cited_sentence_rate",
    "supported_sentence_rate",
    "summaries_with_unsupported_numbers",
    "summaries_with_invented_numbers",
    "repeated_sentences",
    "rouge_l",
)
LABELS = {
    "fact_coverage": "key-provision recall (≥ 0.8)",
    "cited_sentence_rate": "sentences citing a valid [n]",
    "supported_sentence_rate": "sentences backed by their cited passage (1.00)",
    "summaries_with_unsupported_numbers": "summaries with a number no cited passage holds (0)",
    "summaries_with_invented_numbers": "summaries with a number not in the document",
    "repeated_sentences": "repeated sentences per summary (0)",
    "rouge_l": "ROUGE-L F1 vs reference",
}


def summarizers(llm, retriever, modes):
    from chains.summarize import Summarizer

    return {
        mode: Summarizer(None if mode == "extractive" else llm, retriever, mode=mode)
        for mode in modes
    }


def run_set(items, by_mode: dict, retriever, seed: int) -> dict[str, list[dict]]:
    from evals.summaries import summarize_one

    modes = list(by_mode)
    rows: dict[str, list[dict]] = {mode: [] for mode in modes}
    for index, item in enumerate(items):
        order = modes[index % len(modes) :] + modes[: index % len(modes)]
        for mode in order:
            record = summarize_one(by_mode[mode], item, seed, retriever)
            record["model_sentences"] = sum(
                1 for line in record["summary"].splitlines() if line and ': "' not in line
            )
            rows[mode].append(record)
        print(f"  [{index + 1}/{len(items)}] {item.id} {item.source}", flush=True)
    return rows


def aggregate(rows: list[dict]) -> dict:
    out: dict = {}
    for name in METRICS:
        values = [r["metrics"][name] for r in rows if r["metrics"].get(name) is not None]
        out[name] = round(sum(values) / len(values), 3) if values else None
    seconds = sorted(r["seconds"] for r in rows)
    out["p50_s"] = round(statistics.median(seconds), 2)
    out["p95_s"] = round(seconds[int(0.95 * (len(seconds) - 1))], 2)
    out["errors"] = sum(bool(r["error"]) for r in rows)
    out["model_calls"] = sum(r["calls"] for r in rows)
    out["kept_model_sentences"] = sum(r["model_sentences"] for r in rows if r.get("mode") != "raw")
    return out


def table(title: str, summary: dict[str, dict], note: str) -> list[str]:
    modes = list(summary)
    lines = [f"## {title}", "", note, "", "| metric | " + " | ".join(modes) + " |"]
    lines.append("|---|" + "---:|" * len(modes))

    def cell(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    for name in METRICS:
        lines.append(
            f"| {LABELS[name]} | " + " | ".join(cell(summary[m][name]) for m in modes) + " |"
        )
    lines.append(
        "| latency p50 / p95 s | "
        + " | ".join(f"{summary[m]['p50_s']:.2f} / {summary[m]['p95_s']:.2f}" for m in modes)
        + " |"
    )
    lines.append(
        "| model calls / model sentences kept | "
        + " | ".join(
            f"{summary[m]['model_calls']} / "
            + ("–" if m == "raw" else str(summary[m]["kept_model_sentences"]))
            for m in modes
        )
        + " |"
    )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summaries", description=__doc__)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set")
    parser.add_argument("--ecfr-collection", help="an existing eCFR Parts 97 + 80 collection")
    parser.add_argument("--sample-collection", help="an existing sample-corpus collection")
    parser.add_argument("--base", action="store_true", help="the bare base model, no adapter")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    corpus = [FCC / "part97" / "txt", FCC / "part80" / "txt"]
    if not args.ecfr_collection and not all(path.exists() for path in corpus):
        print(f"skipped: {FCC} is not here")
        return 0
    from chains.llm import QLoRAChatModel
    from chains.retrieval import Retriever
    from core.store import close_clients
    from evals.gold import load_summaries
    from ingest.pipeline import ingest_paths

    settings = get_settings()
    ecfr_items, _ = load_summaries(ECFR_GOLD)
    sample_items, _ = load_summaries(SAMPLE_GOLD)
    if args.limit:
        ecfr_items, sample_items = ecfr_items[: args.limit], sample_items[: args.limit]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-summaries-") as store:
        if not (args.ecfr_collection or args.sample_collection):
            settings.qdrant_path = Path(store)
        try:
            ecfr = args.ecfr_collection or "bench_summaries_ecfr"
            sample = args.sample_collection or "bench_summaries_sample"
            if not args.ecfr_collection:
                ingest_paths(corpus, collection=ecfr, progress=False)
            if not args.sample_collection:
                ingest_paths([SAMPLE_CORPUS], collection=sample, progress=False)
            adapter = None if args.base else settings.local_adapter_path
            llm = QLoRAChatModel.load(adapter_path=adapter or None, temperature=0.0)
            results = {}
            for name, collection, items in (
                ("ecfr", ecfr, ecfr_items),
                ("sample", sample, sample_items),
            ):
                retriever = Retriever(collection)
                by_mode = summarizers(llm, retriever, modes)
                warm = time.perf_counter()
                by_mode[modes[0]].summarize_source(items[0].source)  # warm-up: models, caches
                print(f"{name}: warm-up {time.perf_counter() - warm:.1f} s", flush=True)
                results[name] = run_set(items, by_mode, retriever, args.seed)
                load.append(os.getloadavg()[0])
            model = llm.info()
        finally:
            close_clients()
    summary = {name: {m: aggregate(rows[m]) for m in modes} for name, rows in results.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summaries.json").write_text(
        json.dumps(
            {
                "model": model,
                "modes": modes,
                "load_average_1min": [round(x, 2) for x in load],
                "summary": summary,
                "rows": results,
            },
            indent=1,
            ensure_ascii=False,
            default=str,
        )
        + "\n"
    )
    adapter_name = model.get("adapter_name") or "none"
    lines = [
        "# Summaries by mode: raw vs verified (vs extractive)",
        "",
        f"`python -m bench.summaries`: model {model.get('model')} (adapter {adapter_name}) on "
        f"{model.get('device')} ({model.get('dtype')}), greedy; the modes take turns per "
        "document in one process. CPU: 2 cores shared with other work (1-minute load average "
        f"{', '.join(f'{x:.1f}' for x in load)} at start and after each set), so read the "
        "ratios, not the absolute seconds.",
        "",
    ]
    lines += table(
        f"eCFR sections ({len(ecfr_items)} of `{ECFR_GOLD.name}`)",
        summary["ecfr"],
        "One section per summary: the latency row is the one-section summary latency "
        "(goal: verified p50 ≤ 6 s).",
    )
    lines += table(
        f"Sample corpus ({len(sample_items)} of `{SAMPLE_GOLD.name}`)",
        summary["sample"],
        "Whole documents of several chunks (PDF, DOCX, HTML, Markdown, XML).",
    )
    (args.out / "summaries.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
