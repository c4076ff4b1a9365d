"""The fine-tuned embedder vs the base one, side by side (`python -m finetune embeddings`).

    python -m bench.embeddings [--out bench/results] [--work .cache/bench-embeddings]

Trains, then evaluates retrieval with each embedder on the same collections as `python -m
evals` (`prepare`, `slices`, `run_retrieval`, `scores` below, shared with
`bench.embedder_choice` and `bench.store_engines`: embedded Qdrant,
`evals.runner.evaluate_retrieval`, section level, k = 4), each variant in its own process
(EMBEDDING_MODEL=<folder>, its own QDRANT_PATH):

- `base`: the bundled all-MiniLM-L6-v2;
- `sample-trained`: fine-tuned on data/samples only (the only kind that may be shipped);
- `fcc-trained (experiment)`: "train on your own corpus", fine-tuned on ../shared/fcc-corpus
  Parts 97 + 80 themselves, the corpus of the eCFR gold set. A labelled experiment only: its
  gain on the eCFR set is in-domain (the gold questions are hand-written, not generated, but
  the documents are the training documents); never shipped, never a default.

Gold sets: data/eval/gold.jsonl over data/samples, data/eval/ecfr_gold.jsonl over the eCFR
Parts (skipped when ../shared/fcc-corpus is absent), with its slices (original, colloquial,
blind). The models are written under --work (never committed). Writes embeddings.md and
embeddings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core.settings import PROJECT_ROOT

FCC = PROJECT_ROOT.parent / "shared" / "fcc-corpus"
# Gold set -> (gold file, corpus folders): the collections `python -m evals` builds.
SETS = {
    "ecfr": (
        PROJECT_ROOT / "data" / "eval" / "ecfr_gold.jsonl",
        [FCC / "part97" / "txt", FCC / "part80" / "txt"],
    ),
    "sample": (PROJECT_ROOT / "data" / "eval" / "gold.jsonl", [PROJECT_ROOT / "data" / "samples"]),
}
# Colloquial eCFR questions written after the (since removed) query-expansion glossary was
# frozen, never used to tune anything: the "blind" slice.
BLIND = {f"e{n:03d}" for n in range(84, 98)}
K = 4
MODES = ("dense", "bm25", "hybrid")


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
    """Answerable item ids by slice (the eCFR set: original, colloquial, blind)."""
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


def run_retrieval(collection: str, items: list, index) -> dict:
    """`evaluate_retrieval` records of every item, k = K, in every mode."""
    from chains.retrieval import Retriever
    from evals.runner import evaluate_retrieval

    retriever = Retriever(collection)
    retriever.search("warm-up", k=K)  # loads the model
    return {"records": evaluate_retrieval(retriever, items, index, K, MODES, progress=False)}


def scores(records: dict, ids: list[str]) -> dict[str, dict[str, float]]:
    """Mean section-level hit@1, hit@k, MRR and the p50 latency of `ids`, per mode."""
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


def _cell(values: dict) -> str:
    return f"{values['hit@1']:.3f} / {values['hit@k']:.3f} / {values['mrr']:.3f}"


VARIANTS = ("base", "sample-trained", "fcc-trained (experiment)")
SAMPLE_CORPUS = [PROJECT_ROOT / "data" / "samples"]
FCC_CORPUS = [FCC / "part97" / "txt", FCC / "part80" / "txt"]
SHOWN_MODES = ("dense", "hybrid")


def _env(qdrant: Path, model: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_WAIT_POLICY="PASSIVE",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        QDRANT_PATH=str(qdrant),
    )
    if model is not None:
        env["EMBEDDING_MODEL"] = model
    return env


def train(corpus: list[Path], out: Path, work: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "finetune", "embeddings", "--corpus", *map(str, corpus)]
    command += ["--out", str(out), "--no-progress", *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=_env(work / f"qdrant-train-{out.name}"))
    return json.loads((out / "training_info.json").read_text())


def evaluate_here() -> dict:
    """In this process (EMBEDDING_MODEL set by the caller): scores per set, slice, mode."""
    results: dict = {}
    for name in SETS:
        prepared = prepare(name)
        if prepared is None:
            continue
        collection, items, index = prepared
        groups = slices(name, items)
        run = run_retrieval(collection, items, index)
        results[name] = {
            "chunks": index.chunks,
            "slices": {k: len(v) for k, v in groups.items()},
            "scores": {slice_: scores(run["records"], ids) for slice_, ids in groups.items()},
        }
    return results


def evaluate(variant: str, model: str, work: Path) -> dict:
    out = work / f"scores-{variant.split()[0]}.json"
    command = [sys.executable, "-m", "bench.embeddings", "--evaluate-to", str(out)]
    print(f"$ EMBEDDING_MODEL={model!r}", " ".join(command), flush=True)
    qdrant = work / f"qdrant-eval-{variant.split()[0]}"
    subprocess.run(command, check=True, env=_env(qdrant, model))
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / ".cache" / "bench-embeddings")
    parser.add_argument("--epochs", type=float, default=2.0, help="sample-trained epochs")
    parser.add_argument(
        "--fcc-max-pairs", type=int, default=960, help="pairs of the fcc experiment (CPU time)"
    )
    parser.add_argument("--fcc-epochs", type=float, default=1.0)
    parser.add_argument("--no-experiment", action="store_true", help="skip the fcc-trained one")
    parser.add_argument("--reuse", action="store_true", help="reuse models already under --work")
    parser.add_argument("--evaluate-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate_to:
        args.evaluate_to.write_text(json.dumps(evaluate_here(), indent=1) + "\n")
        return 0

    started = time.time()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, str] = {"base": ""}
    training: dict[str, dict] = {}
    plans = [("sample-trained", SAMPLE_CORPUS, ["--epochs", str(args.epochs)])]
    if not args.no_experiment and all(p.exists() for p in FCC_CORPUS):
        plans.append(
            (
                "fcc-trained (experiment)",
                FCC_CORPUS,
                ["--epochs", str(args.fcc_epochs), "--max-pairs", str(args.fcc_max_pairs)],
            )
        )
    for variant, corpus, extra in plans:
        folder = work / variant.split()[0]
        if args.reuse and (folder / "training_info.json").exists():
            training[variant] = json.loads((folder / "training_info.json").read_text())
        else:
            training[variant] = train(corpus, folder, work, extra)
        models[variant] = str(folder)

    results: dict = {
        "k": 4,
        "machine": platform.platform(),
        "models": models,
        "training": {
            v: {
                key: info.get(key)
                for key in (
                    "pairs",
                    "train_loss",
                    "first_loss",
                    "last_loss",
                    "steps",
                    "seconds",
                    "arguments",
                    "training_pairs_positive_rank",
                )
            }
            | {"corpus_files": info["corpus"]["files"], "corpus_chunks": info["corpus"]["chunks"]}
            for v, info in training.items()
        },
        "variants": {},
    }
    for variant, model in models.items():
        results["variants"][variant] = evaluate(variant, model, work)
        for name, per_set in results["variants"][variant].items():
            hybrid = per_set["scores"]["all"]["hybrid"]
            print(
                f"{name:6s} {variant:26s} hybrid hit@1 {hybrid['hit@1']:.3f} hit@4 "
                f"{hybrid['hit@k']:.3f} MRR {hybrid['mrr']:.3f}",
                flush=True,
            )
    results["seconds"] = round(time.time() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embeddings.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "embeddings.md").write_text(render(results))
    print(f"wrote {args.out / 'embeddings.md'}")
    return 0


def render(results: dict) -> str:
    lines = [
        "# Fine-tuned embedder vs the base one",
        "",
        "`python -m bench.embeddings`: section level, k = 4, each cell hit@1 / hit@4 / MRR@4. "
        "Each embedder ingests the "
        "same corpus into its own collection (embedded Qdrant); the keyword index is the same "
        f"for all, so bm25 is not shown. Machine: {results['machine']}; {results['seconds']} s "
        "in all, training included.",
        "",
        "Variants: `base` is the bundled all-MiniLM-L6-v2; `sample-trained` is fine-tuned by "
        "`python -m finetune embeddings --corpus data/samples` (the only kind that may be shipped "
        "or made a default; it is neither); `fcc-trained (experiment)` is the labelled "
        "experiment *train on your own corpus*: fine-tuned on ../shared/fcc-corpus Parts 97 + 80 "
        "themselves, the eCFR set's corpus, so its eCFR numbers are in-domain (the gold "
        "questions are hand-written and were not trained on, but the documents were). Never "
        "committed, never a default.",
        "",
    ]
    variants = results["variants"]
    names = [n for n in SETS if any(n in v for v in variants.values())]
    for name in names:
        first = next(v[name] for v in variants.values() if name in v)
        title = "eCFR Parts 97 + 80" if name == "ecfr" else "Sample corpus (data/samples)"
        lines += [
            f"## {title}: {first['chunks']} chunks (base); "
            + ", ".join(f"{k} {v}" for k, v in first["slices"].items()),
            "",
        ]
        for mode in SHOWN_MODES:
            lines.append(f"**{mode}**" + (" (the default mode)" if mode == "hybrid" else ""))
            lines.append("")
            header = ["embedder", *first["slices"]]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            for variant, per_variant in variants.items():
                if name not in per_variant:
                    continue
                row = [variant] + [
                    _cell(per_variant[name]["scores"][s][mode]) for s in first["slices"]
                ]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    lines += ["## Training", ""]
    lines.append(
        "| variant | files | chunks | pairs (by origin) | epochs | steps | loss first → last "
        "(mean) | training questions' positive chunk hit@1 / MRR, before → after | s |"
    )
    lines.append("|---|---:|---:|---|---:|---:|---|---|---:|")
    for variant, info in results["training"].items():
        rank = info["training_pairs_positive_rank"]
        by_origin = ", ".join(f"{k} {v}" for k, v in info["pairs"]["by_origin"].items())
        lines.append(
            f"| {variant} | {info['corpus_files']} | {info['corpus_chunks']} | "
            f"{info['pairs']['used']} of {info['pairs']['available']} ({by_origin}) | "
            f"{info['arguments']['epochs']:g} | {info['steps']} | "
            f"{info['first_loss']:.3f} → {info['last_loss']:.3f} ({info['train_loss']:.3f}) | "
            f"{rank['before']['hit@1']:.3f} / {rank['before']['mrr']:.3f} → "
            f"{rank['after']['hit@1']:.3f} / {rank['after']['mrr']:.3f} | {info['seconds']:.0f} |"
        )
    lines += [
        "",
        "Positives are the chunks ingestion stores (their embedded text: heading prefix + "
        "text); hard negatives (1 per pair) are the base embedder's top chunks outside the "
        "positive's section that do not hold the answer; MultipleNegativesRankingLoss, batch "
        "16, lr 3e-5, no duplicate texts in a batch. Pairs: the `finetune data from-docs` "
        "questions and the same questions without their 'under § N' reference. CPU only "
        "(2 shared cores), so the fcc experiment trains on a seeded sample of its pairs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
