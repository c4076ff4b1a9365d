"""Calibrate the abstention threshold on passage scores (PASSAGE_THRESHOLD), and the score
below which an answer opens with the weak-match note (PASSAGE_CONFIDENT).

    python -m bench.abstention [--out bench/results]

For every gold item of the sample set (over data/samples) and of the eCFR set (over
../shared/fcc-corpus Parts 97 and 80, when present), the chain's own retrieval and passage
ranking (`RagChain.retrieve_only`, no model) gives the best passage's score. Over a grid of
thresholds it reports abstention on unanswerable items and false abstention on answerable
ones, and picks the threshold with the highest abstention whose false abstention is <= 0.1
on every set.

The answers that remain are right when their top passage lies in a gold section of an
answerable item, wrong otherwise (an unanswerable item answered, or a neighbouring rule
quoted). PASSAGE_CONFIDENT is the score that best tells wrong answers from right ones (the largest
Youden index, true-positive rate minus false-positive rate of "wrong", of the weaker set),
among the scores below which the answers are wrong at least half the time on every set, so
the note ("may not answer this directly") is the honest thing to say where it is said.
Writes abstention.md, abstention.json and abstention.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from core.settings import PROJECT_ROOT, get_settings

FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
SETS = {
    "sample": (PROJECT_ROOT / "data" / "eval" / "gold.jsonl", [PROJECT_ROOT / "data" / "samples"]),
    "ecfr": (
        PROJECT_ROOT / "data" / "eval" / "ecfr_gold.jsonl",
        [FCC / "part97" / "txt", FCC / "part80" / "txt"],
    ),
}
GRID = [round(0.30 + 0.01 * i, 2) for i in range(41)]
MAX_FALSE_ABSTENTION = 0.1
# The note is said only where the answers below the score are wrong at least this often.
MIN_WRONG_WHEN_WEAK = 0.5
CONFIDENT_GRID = [round(0.40 + 0.01 * i, 2) for i in range(41)]
SCORE_KEY = "best_score"  # the chain's passage score (RagChain.select_passages)


def best_scores(name: str, gold: Path, corpus: list[Path]) -> list[dict]:
    from evals.gold import load_gold
    from ingest.pipeline import ingest_paths

    collection = f"abstention_{name}"
    ingest_paths(corpus, collection=collection, progress=False)
    items, _ = load_gold(gold)
    return passage_rows(collection, items)


def passage_rows(collection: str, items: list) -> list[dict]:
    """Per gold item over an ingested collection: the chain's best passage score (and
    cosine) and whether its top passage lies in a gold section."""
    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from evals.metrics import chunk_keys, gold_key

    # Threshold 0 here: the chain's abstention is what is being calibrated.
    settings = get_settings().model_copy(update={"passage_threshold": -1.0})
    chain = RagChain(None, Retriever(collection, settings), settings)
    rows = []
    for item in items:
        gold = {gold_key(g) for g in item.sections}
        result = chain.retrieve_only(item.question)
        top = result.sources[0] if result.sources else None
        rows.append(
            {
                "id": item.id,
                "answerable": item.answerable,
                "slice": item.slice,
                # No passage at threshold -1: another check abstained (a rule or term the
                # documents lack, a subject none of the best passages' sections is about),
                # whatever the threshold.
                "best": result.searched.get(SCORE_KEY) if result.sources else None,
                "best_cosine": result.searched.get("best_cosine"),
                "top_section": top.section if top else None,
                # By section, or by file for documents without sections (the sample's KDBs).
                "gold_hit": bool(top and chunk_keys(top.source, top.section) & gold),
            }
        )
    return rows


def sweep(rows: list[dict]) -> list[dict]:
    out = []
    for threshold in GRID:
        answerable = [r for r in rows if r["answerable"]]
        unanswerable = [r for r in rows if not r["answerable"]]

        def abstains(r, threshold=threshold):
            return r["best"] is None or r["best"] < threshold

        out.append(
            {
                "threshold": threshold,
                "abstention": sum(map(abstains, unanswerable)) / max(1, len(unanswerable)),
                "false_abstention": sum(map(abstains, answerable)) / max(1, len(answerable)),
            }
        )
    return out


def choose(sweeps: dict[str, list[dict]]) -> float:
    """Highest mean abstention with false abstention <= MAX_FALSE_ABSTENTION on every set."""
    best, chosen = -1.0, GRID[0]
    for i, threshold in enumerate(GRID):
        if any(s[i]["false_abstention"] > MAX_FALSE_ABSTENTION for s in sweeps.values()):
            continue
        mean = sum(s[i]["abstention"] for s in sweeps.values()) / len(sweeps)
        if mean > best:
            best, chosen = mean, threshold
    return chosen


def weak_sweep(rows: list[dict], threshold: float) -> list[dict]:
    """For each candidate PASSAGE_CONFIDENT: the answers (best >= threshold) it would flag,
    and how many of those are wrong, and of the rest."""
    answered = [r for r in rows if r["best"] is not None and r["best"] >= threshold]

    def wrong(group: list[dict]) -> int:
        return sum(not (r["answerable"] and r["gold_hit"]) for r in group)

    all_wrong = wrong(answered)
    all_right = len(answered) - all_wrong
    out = []
    for confident in CONFIDENT_GRID:
        flagged = [r for r in answered if r["best"] < confident]
        rest = [r for r in answered if r["best"] >= confident]
        flagged_wrong = wrong(flagged)
        youden = flagged_wrong / max(1, all_wrong) - (len(flagged) - flagged_wrong) / max(
            1, all_right
        )
        out.append(
            {
                "confident": confident,
                "flagged": len(flagged),
                "flagged_wrong": flagged_wrong,
                "rest": len(rest),
                "rest_wrong": wrong(rest),
                "youden": round(youden, 4),
            }
        )
    return out


def choose_confident(weak: dict[str, list[dict]]) -> float:
    """The largest Youden index of the weaker set, among the scores whose flagged answers are
    wrong at least MIN_WRONG_WHEN_WEAK of the time on every set (ties: the lower score)."""
    best, chosen = 0.0, CONFIDENT_GRID[0]
    for i, confident in enumerate(CONFIDENT_GRID):
        rows = [w[i] for w in weak.values()]
        if not all(r["flagged_wrong"] >= MIN_WRONG_WHEN_WEAK * r["flagged"] for r in rows):
            continue
        weakest = min(r["youden"] for r in rows)
        if weakest > best:
            best, chosen = weakest, confident
    return chosen


def plot(sweeps: dict[str, list[dict]], chosen: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, rows in sweeps.items():
        xs = [r["threshold"] for r in rows]
        axis.plot(xs, [r["abstention"] for r in rows], label=f"{name}: abstention (unanswerable)")
        axis.plot(
            xs, [r["false_abstention"] for r in rows], "--", label=f"{name}: false abstention"
        )
    axis.axvline(chosen, color="grey", lw=1)
    axis.axhline(MAX_FALSE_ABSTENTION, color="grey", lw=0.5, ls=":")
    axis.set_xlabel("passage threshold (best passage score)")
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7)
    axis.set_title(f"Abstention by threshold (chosen {chosen})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abstention", description=__doc__)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    from core.store import close_clients

    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="abstention-") as store:
        get_settings().qdrant_path = Path(store)
        try:
            for name, (gold, corpus) in SETS.items():
                if all(path.exists() for path in corpus):
                    rows[name] = best_scores(name, gold, corpus)
        finally:
            close_clients()
    sweeps = {name: sweep(r) for name, r in rows.items()}
    chosen = choose(sweeps)
    # The note is calibrated on the answers the served threshold lets through.
    served = get_settings().passage_threshold
    weak = {name: weak_sweep(r, served) for name, r in rows.items()}
    confident = choose_confident(weak)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"chosen": chosen, "confident": confident, "sweeps": sweeps, "weak": weak}
    (args.out / "abstention.json").write_text(
        json.dumps({**document, "items": rows}, indent=1) + "\n"
    )
    plot(sweeps, chosen, args.out / "abstention.png")
    lines = [
        "# Abstention threshold (passage scores)",
        "",
        f"Chosen PASSAGE_THRESHOLD = **{chosen}**: the highest abstention on unanswerable items "
        f"with false abstention <= {MAX_FALSE_ABSTENTION} on every set. `python -m bench.abstention`.",
        "",
        f"Served: PASSAGE_THRESHOLD = {get_settings().passage_threshold} (the guarded baselines "
        "were written with it; change it together with them).",
        "",
        "| set | answerable | unanswerable | abstention at chosen | false abstention at chosen "
        "| top passage in a gold section |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        at = next(s for s in sweeps[name] if s["threshold"] == chosen)
        answerable = [x for x in r if x["answerable"]]
        hit = sum(x["gold_hit"] for x in answerable) / max(1, len(answerable))
        lines.append(
            f"| {name} | {len(answerable)} | {len(r) - len(answerable)} | {at['abstention']:.2f} "
            f"| {at['false_abstention']:.2f} | {hit:.2f} |"
        )
    lines += [
        "",
        "![abstention](abstention.png)",
        "",
        "## The weak-match note (PASSAGE_CONFIDENT)",
        "",
        f"Over the answers PASSAGE_THRESHOLD = {served} lets through (wrong: an unanswerable "
        "item answered, or the top passage outside the gold sections and files), chosen "
        f"PASSAGE_CONFIDENT = **{confident}**: the largest Youden index (share of the wrong "
        "answers that get the note minus share of the right ones) of the weaker set, where the "
        f"answers with the note are wrong at least {MIN_WRONG_WHEN_WEAK:.0%} of the time on "
        "every set. Those answers open with the note that the closest passages may not answer "
        "the question; the quotes still follow.",
        "",
        "| set | PASSAGE_CONFIDENT | answers with the note | wrong among them "
        "| answers without it | wrong among them | Youden |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, table in weak.items():
        for row in table:
            if row["confident"] in (0.5, 0.55, confident, 0.65, 0.7, 0.75):
                flagged, rest = max(1, row["flagged"]), max(1, row["rest"])
                lines.append(
                    f"| {name} | {row['confident']} | {row['flagged']} "
                    f"| {row['flagged_wrong']} ({row['flagged_wrong'] / flagged:.0%}) "
                    f"| {row['rest']} | {row['rest_wrong']} ({row['rest_wrong'] / rest:.0%}) "
                    f"| {row['youden']:.2f} |"
                )
    lines.append("")
    (args.out / "abstention.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
