"""The chat model's rereading of the kept passages (`chains.rerank`) against the first-stage
order alone, side by side in one run.

    python -m bench.rerank [--weights 0,0.3] [--sets ecfr,sample] [--exam-limit 168]
                           [--modes extractive] [--adapter PATH] [--out bench/results]
                           [--work .cache/bench-rerank] [--reuse]

For each gold set and RERANK_WEIGHT, the evaluation CLI itself runs in its own process
(`python -m evals --gold G --corpus C --answer-modes M [--exam E] --json`) over one embedded
Qdrant store (the corpus is ingested once; later runs reuse it). Weight 0 is the first stage
alone. Reported per run: the answer's first passage in a gold section (answerable items),
key-fact recall, citation precision, abstention and false abstention, unsupported numbers,
the exam's answered right (with BM25 top-3 beside it) and the median time from question to
passages (`retrieve_s`, which holds the rereading). Writes rerank.md, rerank.json and
rerank.png. The eCFR set needs ../shared/fcc-corpus (Parts 97 and 80, as text).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path

from bench.eval_runs import evals_argv, grouped_bars, run_evals, variant_of
from core.settings import PROJECT_ROOT, get_settings

RESULTS = Path(__file__).resolve().parent / "results"
FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
EVAL = PROJECT_ROOT / "data" / "eval"
SETS = {
    "ecfr": {
        "gold": EVAL / "ecfr_gold.jsonl",
        "corpus": [FCC / "part97" / "txt", FCC / "part80" / "txt"],
        "exam": EVAL / "ecfr_exam.jsonl",
    },
    "sample": {"gold": EVAL / "gold.jsonl", "corpus": [PROJECT_ROOT / "data" / "samples"]},
}
ROWS = [  # (label, metric key with {v} for the variant)
    ("first passage in a gold section", "answer.{v}.first_source_hit"),
    ("key-fact recall", "answer.{v}.key_fact_recall"),
    ("citation precision", "answer.{v}.citation_precision"),
    ("abstention", "answer.{v}.abstention_accuracy"),
    ("false abstention", "answer.{v}.false_abstention_rate"),
    ("answers with unsupported numbers", "answer.{v}.answers_with_unsupported_numbers"),
    ("exam: answered right", "exam.{v}.answered_right"),
    ("exam: first passage in the rule's section", "exam.{v}.section_hit1"),
    ("exam: BM25 top-3 answered right", "exam.bm25_top3.answered_right"),
    ("median seconds to passages", "answer.{v}.retrieve_s_p50"),
]


def run_one(name: str, weight: float, args) -> dict:
    out = args.work / f"{name}-w{weight:g}"
    argv = evals_argv(SETS[name], out, args.modes, args.exam_limit, args.adapter)
    env = {**os.environ, "RERANK_WEIGHT": str(weight), "QDRANT_PATH": str(args.work / "qdrant")}
    data = run_evals(argv, env, out, f"{name}, weight {weight:g}", args.reuse)
    aggregate = {**data["aggregate"], **first_source_hits(data)}
    aggregate["model"] = f"{data['config']['model']['model']} + adapter {args.adapter or 'none'}"
    return aggregate


def first_source_hits(data: dict) -> dict[str, float]:
    """Per variant: the first listed passage in a gold section (answerable items; an
    abstention counts 0) and the median retrieve_s."""
    hits: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    for record in data["items"]:
        for variant, answer in record.get("answers", {}).items():
            times.setdefault(variant, []).append(answer["timings"].get("retrieve_s") or 0.0)
            if not record["answerable"]:
                continue
            sources = answer["sources"]
            hit = bool(sources) and sources[0]["section"] in set(record["sections"])
            hits.setdefault(variant, []).append(float(hit and not answer["abstained"]))
    found = {f"answer.{v}.first_source_hit": statistics.mean(h) for v, h in hits.items()}
    found |= {f"answer.{v}.retrieve_s_p50": statistics.median(t) for v, t in times.items()}
    return found


def to_markdown(report: dict) -> str:
    lines = [
        "# Rereading the kept passages with the chat model (query likelihood)",
        "",
        f"{report['date']} · {report['model']} · answer modes {', '.join(report['modes'])} · "
        f"exam limit {report['exam_limit']} · weights {', '.join(f'{w:g}' for w in report['weights'])} "
        "(0 = the first-stage order alone) · one run, this machine (2 CPU cores)",
        "",
    ]
    for name, runs in report["sets"].items():
        for mode in report["modes"]:
            lines += [f"## {name} gold set, {mode} answers", ""]
            header = "| metric | " + " | ".join(f"weight {w}" for w in runs) + " |"
            lines += [header, "|---|" + "---:|" * len(runs)]
            for label, key in ROWS:
                values = []
                for aggregate in runs.values():
                    value = aggregate.get(key.format(v=variant_of(aggregate, mode)))
                    values.append("—" if value is None else f"{value:.3f}")
                if set(values) != {"—"}:
                    lines.append(f"| {label} | " + " | ".join(values) + " |")
            lines.append("")
    lines += [
        "First passage in a gold section: the first passage the answer lists lies in a section "
        "of the gold item (answerable items; an abstention counts as a miss). "
        "Median seconds to passages: retrieval, passage ranking and the rereading, per question.",
        "",
    ]
    return "\n".join(lines)


def render_plot(report: dict, path: Path) -> None:
    keys = [("first passage in a gold section", ROWS[0][1]), ("key-fact recall", ROWS[1][1])]
    keys += [("exam answered right", ROWS[6][1])]
    mode = report["modes"][0]
    labels, bars = [], {}
    for name, runs in report["sets"].items():
        for label, key in keys:
            got = [a.get(key.format(v=variant_of(a, mode))) for a in runs.values()]
            if all(g is None for g in got):
                continue
            labels.append(f"{name}\n{label}")
            for weight, value in zip(runs, got, strict=True):
                bars.setdefault(f"weight {weight}", []).append(value or 0.0)
    grouped_bars(path, labels, bars, f"Rereading the kept passages ({mode} answers)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="0,0.3")
    parser.add_argument("--sets", default="ecfr,sample")
    parser.add_argument("--modes", default="extractive")
    parser.add_argument("--exam-limit", type=int, default=168)
    parser.add_argument(
        "--adapter",
        default=get_settings().local_adapter_path or "",
        help="the adapter that answers and rereads (default: the served one; '' for the bare base)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--reuse", action="store_true", help="keep a run whose results.json is in --work"
    )
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / ".cache" / "bench-rerank")
    args = parser.parse_args(argv)
    args.weights = [float(w) for w in args.weights.split(",")]
    args.sets = [s for s in args.sets.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.sets) - set(SETS)
    if unknown:
        parser.error(f"unknown set(s) {', '.join(sorted(unknown))}: use {', '.join(SETS)}")
    if "ecfr" in args.sets and not FCC.exists():
        parser.error(f"the eCFR set needs {FCC}; run with --sets sample")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "modes": args.modes,
        "exam_limit": args.exam_limit,
        "weights": args.weights,
        "sets": {
            name: {f"{w:g}": run_one(name, w, args) for w in args.weights} for name in args.sets
        },
    }
    report["model"] = next(iter(next(iter(report["sets"].values())).values()))["model"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rerank.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "rerank.md").write_text(to_markdown(report), encoding="utf-8")
    render_plot(report, args.out / "rerank.png")
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
