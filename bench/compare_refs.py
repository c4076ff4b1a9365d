"""Answers of an earlier commit and of this working tree, side by side in one run.

    python -m bench.compare_refs --base 427fc89 [--sets ecfr,sample] [--modes verified]
                                 [--exam-limit 168] [--limit N] [--out bench/results]
                                 [--work .cache/bench-refs] [--reuse]

The base commit is checked out in a temporary git worktree; in it and in this tree, the
evaluation CLI runs in its own process (`python -m evals ... --json`, with the served adapter
and the same settings, models and embedded Qdrant store), one after the other on this
machine. Reported per set: the answer's first passage in a gold section, key-fact recall,
citation precision, abstention, false abstention, unsupported numbers, the exam's answered
right with BM25 top-3 beside it, and the median seconds to the first shown token and to the
whole answer (the latency goals are medians). Writes compare-refs.md, compare-refs.json and
compare-refs.png. The eCFR set needs ../shared/fcc-corpus (Parts 97 and 80, as text).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.eval_runs import evals_argv, grouped_bars, run_evals, variant_of
from bench.rerank import FCC, SETS
from core.settings import PROJECT_ROOT, get_settings

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = [  # (label, key in the aggregate with {v} for the variant)
    ("first passage in a gold section", "answer.{v}.first_source_hit"),
    ("key-fact recall", "answer.{v}.key_fact_recall"),
    ("citation precision", "answer.{v}.citation_precision"),
    ("abstention", "answer.{v}.abstention_accuracy"),
    ("false abstention", "answer.{v}.false_abstention_rate"),
    ("answers with unsupported numbers", "answer.{v}.answers_with_unsupported_numbers"),
    ("exam: answered right", "exam.{v}.answered_right"),
    ("exam: BM25 top-3 answered right", "exam.bm25_top3.answered_right"),
    ("median first token, s", "answer.{v}.first_token_s_p50"),
    ("median total, s", "answer.{v}.total_s_p50"),
]


def worktree(ref: str, work: Path) -> Path:
    """The commit `ref`, checked out (once) under `work`."""
    folder = work / f"tree-{ref}"
    if not folder.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), ref],
            cwd=PROJECT_ROOT, check=True, capture_output=True,
        )  # fmt: skip
    return folder


def run_eval(tree: Path, label: str, name: str, args) -> dict:
    out = args.work / f"{name}-{label}"
    argv = evals_argv(SETS[name], out, args.modes, args.exam_limit, args.adapter)
    argv += ["--limit", str(args.limit)] if args.limit else []
    env = {
        **os.environ,
        "QDRANT_PATH": str(args.work / "qdrant"),
        "CACHE_DIR": str(get_settings().cache_dir),  # the models, dequantized once
        "PYTHONPATH": str(tree),
    }
    return summarize(run_evals(argv, env, out, f"{name}, {label}", args.reuse, cwd=tree))


def summarize(data: dict) -> dict:
    """The aggregate, plus per variant: the first listed passage in a gold section
    (answerable items; an abstention counts 0) and the median first-token and total times."""
    found = dict(data["aggregate"])
    per: dict[str, dict[str, list[float]]] = {}
    for record in data["items"]:
        for variant, answer in record.get("answers", {}).items():
            lists = per.setdefault(variant, {"hit": [], "first": [], "total": []})
            timings = answer["timings"]
            lists["total"].append(timings.get("total_s") or 0.0)
            if timings.get("first_token_s") is not None:
                lists["first"].append(timings["first_token_s"])
            if record["answerable"]:
                sources = answer["sources"]
                hit = bool(sources) and sources[0]["section"] in set(record["sections"])
                lists["hit"].append(float(hit and not answer["abstained"]))
    for variant, lists in per.items():
        for key, values in (("first_source_hit", lists["hit"]), ("total_s_p50", lists["total"])):
            found[f"answer.{variant}.{key}"] = (
                statistics.mean(values) if key == "first_source_hit" else statistics.median(values)
            )
        if lists["first"]:
            found[f"answer.{variant}.first_token_s_p50"] = statistics.median(lists["first"])
    return found


def to_markdown(report: dict) -> str:
    base, head = report["labels"]
    lines = [
        "# Answers: an earlier commit and this tree, side by side",
        "",
        f"{report['date']} · base {report['base']} vs this tree ({report['head']}) · "
        f"adapter {report['adapter'] or 'none'} · answer modes {', '.join(report['modes'])} · "
        "one run, one after the other, this machine (2 CPU cores) · "
        "`python -m bench.compare_refs`",
        "",
    ]
    for name, runs in report["sets"].items():
        for mode in report["modes"]:
            lines += [f"## {name} gold set, {mode} answers", ""]
            lines += [f"| metric | {base} | {head} |", "|---|---:|---:|"]
            for label, key in ROWS:
                values = []
                for aggregate in (runs[base], runs[head]):
                    value = aggregate.get(key.format(v=variant_of(aggregate, mode)))
                    values.append("—" if value is None else f"{value:.3f}")
                if set(values) != {"—"}:
                    lines.append(f"| {label} | {values[0]} | {values[1]} |")
            lines.append("")
    return "\n".join(lines)


def render_plot(report: dict, path: Path) -> None:
    mode = report["modes"][0]
    keys = [ROWS[0], ROWS[1], ROWS[3], ("false abstention (lower is better)", ROWS[4][1]), ROWS[6]]
    labels, bars = [], {label: [] for label in report["labels"]}
    for name, runs in report["sets"].items():
        for title, key in keys:
            got = {lab: runs[lab].get(key.format(v=variant_of(runs[lab], mode))) for lab in bars}
            if all(v is None for v in got.values()):
                continue
            labels.append(f"{name}\n{title}")
            for lab, value in got.items():
                bars[lab].append(value or 0.0)
    grouped_bars(path, labels, bars, f"{mode} answers: base vs this tree")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit (a git ref)")
    parser.add_argument("--sets", default="ecfr,sample")
    parser.add_argument("--modes", default="verified")
    parser.add_argument("--exam-limit", type=int, default=168)
    parser.add_argument("--limit", type=int, default=0, help="answer at most N gold items")
    parser.add_argument(
        "--adapter",
        default=get_settings().local_adapter_path or "",
        help="the adapter that answers (default: the served one; '' for the bare base)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reuse", action="store_true", help="keep runs found in --work")
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / ".cache" / "bench-refs")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()  # the evaluations run inside the worktrees
    args.sets = [s for s in args.sets.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    if "ecfr" in args.sets and not FCC.exists():
        parser.error(f"the eCFR set needs {FCC}; run with --sets sample")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, text=True, capture_output=True
    ).stdout.strip()
    labels = (args.base, f"{head}+tree")
    trees = {labels[0]: worktree(args.base, args.work), labels[1]: PROJECT_ROOT}
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": args.base,
        "head": labels[1],
        "labels": labels,
        "adapter": args.adapter,
        "modes": args.modes,
        "sets": {
            name: {label: run_eval(tree, label, name, args) for label, tree in trees.items()}
            for name in args.sets
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare-refs.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "compare-refs.md").write_text(to_markdown(report))
    render_plot(report, args.out / "compare-refs.png")
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
