"""One run of the evaluation CLI in its own process, for the side-by-side benches
(`bench.rerank`, `bench.compare_refs`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def evals_argv(spec: dict, out: Path, modes: list[str], exam_limit: int, adapter: str) -> list:
    """`python -m evals` over one gold set (`spec`: gold, corpus folders, optional exam)."""
    argv = [sys.executable, "-m", "evals", "--gold", str(spec["gold"]), "--json", "--no-progress"]
    argv += ["--answer-modes", ",".join(modes), "--out", str(out)]
    for folder in spec["corpus"]:
        argv += ["--corpus", str(folder)]
    if spec.get("exam"):
        argv += ["--exam", str(spec["exam"]), "--exam-limit", str(exam_limit)]
    if adapter:
        argv += ["--adapter", adapter]
    return argv


def run_evals(argv: list, env: dict, out: Path, label: str, reuse: bool, cwd=None) -> dict:
    """The run's results.json (run now unless `reuse` finds it); exit 1 (a guard missed) is a
    result, any other failure stops the bench."""
    results = out / "results.json"
    if not (reuse and results.exists()):
        print(f"[{label}] {' '.join(map(str, argv[1:]))}", flush=True)
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise SystemExit(f"evals failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(results.read_text(encoding="utf-8"))


def variant_of(aggregate: dict, mode: str) -> str:
    """The evaluation's variant name for `mode`: "adapter/extractive" beside other modes,
    plain "adapter" (or "base") when it is the only one."""
    names = {k.split(".")[1] for k in aggregate if k.startswith("answer.")}
    return next((n for n in sorted(names) if n.endswith(f"/{mode}")), min(names, default=""))


def grouped_bars(path: Path, labels: list[str], bars: dict[str, list[float]], title: str) -> None:
    """One group of bars per label (0..1), one bar per run in `bars` (legend label -> values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 1.2), 4))
    width = 0.8 / max(len(bars), 1)
    for i, (name, values) in enumerate(bars.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ticks = [x + width * (len(bars) - 1) / 2 for x in range(len(labels))]
    ax.set_xticks(ticks, [textwrap.fill(label, 18) for label in labels], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
