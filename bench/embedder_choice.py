"""Which embedder: the bundled all-MiniLM-L6-v2 against all-mpnet-base-v2, same run, same queries.

    QDRANT_PATH=/tmp/embedder-choice python -m bench.embedder_choice [--out bench/results]
        [--work .cache/bench-embedder-choice] [--embedders minilm,mpnet] [--no-answers]
        [--no-cross] [--reuse]
    python -m bench.embedder_choice --cross-only | --interleaved-only | --render-only

Each embedder runs in its own process (EMBEDDING_MODEL unset / =all-mpnet-base-v2) over its
own embedded Qdrant store (`<QDRANT_PATH or --work/qdrant>/<embedder>`, emptied first unless
--reuse, so the ingest is a first ingest), and measures:

- cost on this machine: the first ingest of the eCFR gold set's corpus (../shared/fcc-corpus
  Parts 97 + 80, ~1,260 chunks) and of data/samples, in chunks/s of wall and CPU time; the
  query encode latency (`Retriever.embed_query`, one question at a time, every gold question
  of both sets); and the evidence ranking's encode of 60 short passages (~40 tokens, real
  eCFR passages) with a cold cache, as `chains.evidence.encode_texts` does per question, and
  of each eCFR question's own passages;
- retrieval, section level, k = 4, dense / BM25 / hybrid, by slice: `bench.embeddings`'s
  `evaluate_here` (the collections and code of `python -m evals`);
- the passage scores: per gold item, `RagChain.retrieve_only`'s best passage score, as
  `bench.abstention` reads it (there over its own stores; here over the evaluation
  collections, same corpus and chunks), and what its calibrations would pick for
  PASSAGE_THRESHOLD and PASSAGE_CONFIDENT under this embedder.

Then, unless --no-answers, the evaluation CLI itself scores the extractive answers (no LLM
text: key-fact recall, abstention, false abstention) on both sets with the same store:
`python -m evals --gold G --corpus C... --answer-modes extractive --json`, with the served
PASSAGE_THRESHOLD / PASSAGE_CONFIDENT, and for an embedder whose own calibration differs,
once more with its calibrated values.

With both embedders, two more steps: the interleaved cost (both models in one process, the
same chunk, query and passage encodes alternating, so that the load of neighbours on the
shared cores hits both alike), and the cross runs: extractive answers with one embedder's
store and retrieval and the other's evidence ranking and sentence verification
(`chains.evidence.default_embedder` swapped in the evaluation's process), to tell which of
the two moves the answers. Writes embedder-choice.md and embedder-choice.json; the
recommendation paragraph (RECOMMENDATION below) is written by hand for the recorded run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.embeddings import SETS, K, _cell, evaluate_here
from core.settings import PROJECT_ROOT

EMBEDDERS = {"minilm": "", "mpnet": "all-mpnet-base-v2"}
LABELS = {"minilm": "all-MiniLM-L6-v2 (default)", "mpnet": "all-mpnet-base-v2"}
SHOWN_MODES = ("dense", "hybrid")
PASSAGES = 60
PASSAGE_TOKENS = (30, 50)  # the 60 passages' token range (embedder's tokenizer), ~40 each
REPS = 5
# Written by hand for the run recorded in bench/results/embedder-choice.json: a rerun rewrites
# the tables, not this paragraph.
RECOMMENDATION = """
Keep all-MiniLM-L6-v2 the default, on the CPU and on a GPU; all-mpnet-base-v2 is an option
(`EMBEDDING_MODEL=all-mpnet-base-v2`, re-ingest, and `PASSAGE_THRESHOLD=0.45`, what
`bench.abstention`'s rule picks under it). It buys better evidence: the gold section in the
top 4 more often on the eCFR set (hybrid hit@4 0.684 -> 0.759, MRR 0.580 -> 0.613) and more
key facts in the extractive answers there (0.354 -> 0.424 at the served thresholds, 0.367 ->
0.437 each at its own calibration; sample 0.536 -> 0.548), mostly from ranking the evidence
passages rather than from retrieval (MiniLM retrieval with mpnet evidence 0.405, mpnet
retrieval with MiniLM evidence 0.373). It does not give a better first hit (eCFR hybrid hit@1
0.519 -> 0.506; blind colloquial 6 -> 5 of 14; sample +2 first hits, -2 in the top 4), and it
tells unanswerable questions apart worse (median best passage score 0.608 unanswerable vs 0.633
answerable on eCFR; MiniLM 0.559 vs 0.638): at the served thresholds it abstains on 9 of 18
unanswerable eCFR questions instead of 12, with more false abstentions (0.177 vs 0.127);
each at its own calibration, false abstention is the same (0.089) and abstention 0.50 vs 0.61. On
this 2-core CPU it costs 6.5-8x everywhere (interleaved: 1.8 vs 13.9 chunks/s to embed, a
17-minute instead of 2.5-minute first ingest of the 1,260 eCFR chunks; 90 vs 14 ms per query;
60 passages 5.3 vs 0.75 s), about 4 s more per answer at the median and 8 s more at p95 for
the evidence ranking alone (a question's own ~18 passages: 4.6 / 9.6 s vs 0.64 / 1.2 s), twice
the dense vector storage and 438 MB of weights. Not a GPU default either: there the cost
would mostly go away (not measured: the GPU machines cannot install the parts), but a collection is
tied to its embedder (384 vs 768 dimensions, the embedder in the chunk signature), so a
device-dependent default would make an index built on one machine unusable on the other, and
it would need its own thresholds and guarded baselines for a gain measured on 79 + 87
answerable questions and offset by weaker abstention. Worth revisiting if the evidence-ranking
encode gets cheaper (passage vectors computed once at ingest) and a larger unanswerable set
shows the abstention gap closes.
"""


def _env(qdrant: Path, model: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_WAIT_POLICY="PASSIVE",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        QDRANT_PATH=str(qdrant),
        EMBEDDING_MODEL=model,
    )
    env.update(extra or {})
    return env


# In the embedder's own process --------------------------------------------------------------


def _timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _ingest_cost() -> dict:
    """The first ingest of each gold set's corpus into its evaluation collection."""
    from evals.runner import corpus_collection_name, ingest_corpus

    out = {}
    for name, (_, corpus) in SETS.items():
        if not all(path.exists() for path in corpus):
            continue
        collection = corpus_collection_name(corpus)
        report, wall, cpu = _timed(ingest_corpus, corpus, collection, False)
        written = report["chunks_written"]
        out[name] = {
            "collection": collection,
            "chunks_written": written,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "chunks_per_s": round(written / wall, 2) if written else None,
            "chunks_per_cpu_s": round(written / cpu, 2) if written else None,
        }
    return out


def _percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "n": len(ordered),
    }


def _query_cost(questions: list[str], collection: str) -> dict:
    from chains.retrieval import Retriever

    retriever = Retriever(collection)
    retriever.embed_query("warm-up")
    seconds = [_timed(retriever.embed_query, q)[1] for q in questions]
    return _percentiles(seconds)


def _evidence_cost(collection: str, items: list, shared: Path) -> dict:
    """Cold-cache encodes of evidence passages: a fixed 60 of ~40 tokens, and per question.

    The 60 are chosen by the first embedder measured (among its eCFR questions' passages)
    and written to `shared`; the next ones encode the very same texts."""
    from chains import evidence
    from chains.evidence import _ranking_text, encode_texts, passages_from_chunks
    from chains.retrieval import Retriever
    from core.settings import get_settings
    from core.store import get_sentence_model

    model = get_sentence_model()
    retriever = Retriever(collection)
    per_question, pool = [], {}
    for item in items:
        chunks = retriever.search(item.question, k=get_settings().retrieval_k)  # as the chain
        texts = [_ranking_text(p) for p in passages_from_chunks(chunks)]
        for text in texts:
            pool.setdefault(text, len(model.tokenizer(text)["input_ids"]))
        evidence._CACHE.clear()
        seconds = _timed(encode_texts, [item.question, *texts])[1]
        per_question.append({"passages": len(texts), "seconds": seconds})
    if shared.exists():
        chosen = json.loads(shared.read_text())
    else:
        low, high = PASSAGE_TOKENS
        fitting = sorted(t for t, n in pool.items() if low <= n <= high)
        chosen = fitting[:: max(1, len(fitting) // PASSAGES)][:PASSAGES]
        shared.write_text(json.dumps(chosen, indent=1) + "\n")
    tokens = [len(model.tokenizer(t)["input_ids"]) for t in chosen]
    fixed = []
    for _ in range(REPS):
        evidence._CACHE.clear()
        fixed.append(_timed(encode_texts, ["What is the maximum power?", *chosen])[1])
    evidence._CACHE.clear()
    return {
        "fixed": {
            "passages": len(chosen),
            "mean_tokens": round(statistics.fmean(tokens), 1),
            "p50_ms": round(1000 * statistics.median(fixed), 1),
            "min_ms": round(1000 * min(fixed), 1),
            "reps": REPS,
        },
        "per_question": {
            "questions": len(per_question),
            "passages_median": statistics.median(r["passages"] for r in per_question),
            "passages_max": max(r["passages"] for r in per_question),
            **_percentiles([r["seconds"] for r in per_question]),
        },
    }


def _calibration(rows: dict[str, list[dict]]) -> dict:
    from bench.abstention import choose, choose_confident, sweep, weak_sweep
    from core.settings import get_settings

    settings = get_settings()
    sweeps = {name: sweep(r) for name, r in rows.items()}
    served = settings.passage_threshold
    chosen = choose(sweeps)
    out: dict = {
        "served": {"threshold": served, "confident": settings.passage_confident},
        "threshold": chosen,
        # As bench.abstention: the note is calibrated on what the served threshold lets
        # through; and on what this embedder's own threshold would let through.
        "confident_at_served": choose_confident(
            {n: weak_sweep(r, served) for n, r in rows.items()}
        ),
        "confident": choose_confident({n: weak_sweep(r, chosen) for n, r in rows.items()}),
        "sets": {},
    }
    for name, r in rows.items():
        answerable = [x for x in r if x["answerable"]]
        unanswerable = [x for x in r if not x["answerable"]]
        at = {s["threshold"]: s for s in sweeps[name]}
        scores = [x["best"] for x in r if x["best"] is not None]
        out["sets"][name] = {
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "top_passage_in_gold": sum(x["gold_hit"] for x in answerable) / max(1, len(answerable)),
            "at_served": at.get(round(served, 2)),
            "at_chosen": at[chosen],
            "best_score_median": {
                "answerable": statistics.median(x["best"] for x in answerable if x["best"])
                if any(x["best"] for x in answerable)
                else None,
                "unanswerable": statistics.median(x["best"] for x in unanswerable if x["best"])
                if any(x["best"] for x in unanswerable)
                else None,
            },
            "best_cosine_median": statistics.median(
                x["best_cosine"] for x in r if x["best_cosine"] is not None
            ),
            "scored": len(scores),
        }
    return out


def interleaved_cost(passages: list[str], rounds: int = 3) -> dict:
    """Both models in one process, their encodes alternating, so that the neighbours' load
    on the shared cores hits both alike: wall and CPU time of the same work."""
    from sentence_transformers import SentenceTransformer

    from bench.ingest import SHARED, _chunk_texts
    from chains import evidence
    from chains.evidence import encode_texts
    from core.models import resolve_embedding_model
    from core.settings import get_settings
    from evals.gold import load_gold

    settings = get_settings()
    models = {
        name: SentenceTransformer(resolve_embedding_model(model), device="cpu")
        for name, model in EMBEDDERS.items()
    }
    chunks = _chunk_texts(SHARED / "part97" / "txt", settings)  # MiniLM-sized chunks
    questions = [i.question for i in load_gold(SETS["ecfr"][0])[0]][:50]

    def chunk_encode(model):
        model.encode(
            chunks,
            batch_size=settings.embed_batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def query_encode(model):
        for question in questions:
            model.encode(
                [question],
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    def passage_encode(model):
        evidence._CACHE.clear()
        encode_texts(["What is the maximum power?", *passages], model)

    tasks = {"chunks": chunk_encode, "queries": query_encode, "passages": passage_encode}
    for model in models.values():  # warm-up
        model.encode(["warm-up"] * 4, show_progress_bar=False)
    times: dict = {n: {t: {"wall": [], "cpu": []} for t in tasks} for n in models}
    for round_ in range(rounds):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for task, function in tasks.items():
            for name in order:
                _, wall, cpu = _timed(function, models[name])
                times[name][task]["wall"].append(wall)
                times[name][task]["cpu"].append(cpu)
                print(f"  {name} {task}: {wall:.2f} s (CPU {cpu:.2f} s)", flush=True)
    out: dict = {
        "rounds": rounds,
        "chunks": len(chunks),
        "queries": len(questions),
        "passages": len(passages),
        "embedders": {},
    }
    for name, per_task in times.items():
        best = {t: {k: min(v) for k, v in per_task[t].items()} for t in tasks}
        out["embedders"][name] = {
            "chunks_per_s": round(len(chunks) / best["chunks"]["wall"], 2),
            "chunks_per_cpu_s": round(len(chunks) / best["chunks"]["cpu"], 2),
            "query_ms": round(1000 * best["queries"]["wall"] / len(questions), 1),
            "query_cpu_ms": round(1000 * best["queries"]["cpu"] / len(questions), 1),
            "passages_ms": round(1000 * best["passages"]["wall"], 1),
            "passages_cpu_ms": round(1000 * best["passages"]["cpu"], 1),
            "raw": per_task,
        }
    return out


def measure_here(shared_passages: Path) -> dict:
    """Everything of one embedder, in this process (EMBEDDING_MODEL set by the caller)."""
    from bench.embeddings import prepare
    from core.models import resolve_embedding_model
    from core.store import embedding_dim, get_sentence_model

    model, load_wall, _ = _timed(get_sentence_model)
    result: dict = {
        "model": resolve_embedding_model(),
        "dim": embedding_dim(),
        "max_seq_length": model.max_seq_length,
        "parameters": sum(p.numel() for p in model.parameters()),
        "load_s": round(load_wall, 2),
    }
    print(f"  ingest (first, timed) for {result['model']}", flush=True)
    result["ingest"] = _ingest_cost()
    print("  retrieval", flush=True)
    result["retrieval"] = evaluate_here()
    prepared = {name: prepare(name) for name in SETS}
    prepared = {name: p for name, p in prepared.items() if p is not None}
    questions = [item.question for _, items, _ in prepared.values() for item in items]
    first = next(iter(prepared.values()))
    result["query_encode"] = _query_cost(questions, first[0])
    if "ecfr" in prepared:
        collection, items, _ = prepared["ecfr"]
        print("  evidence encode", flush=True)
        result["evidence_encode"] = _evidence_cost(
            collection, [i for i in items if i.answerable], shared_passages
        )
    print("  passage scores", flush=True)
    from bench.abstention import passage_rows

    rows = {name: passage_rows(p[0], p[1]) for name, p in prepared.items()}
    result["calibration"] = _calibration(rows)
    result["passage_rows"] = rows
    return result


# The orchestration ------------------------------------------------------------------------


def measure(name: str, qdrant: Path, work: Path) -> dict:
    out = work / f"measure-{name}.json"
    command = [sys.executable, "-m", "bench.embedder_choice", "--measure-to", str(out)]
    print(f"$ EMBEDDING_MODEL={EMBEDDERS[name]!r} QDRANT_PATH={qdrant}", *command[1:], flush=True)
    subprocess.run(command, check=True, env=_env(qdrant, EMBEDDERS[name]))
    return json.loads(out.read_text())


def _settings_k() -> int:
    from core.settings import get_settings

    return get_settings().retrieval_k


def _code_revision() -> str | None:
    """The commit measured, and the files that differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", ".", ":!bench/results"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return None
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {head}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def _qdrant_root(work: Path) -> Path:
    return Path(os.environ["QDRANT_PATH"]) if os.environ.get("QDRANT_PATH") else work / "qdrant"


def cross(work: Path, root: Path) -> dict:
    """Extractive answers with the retrieval of one embedder and the evidence ranking and
    verification of the other, served thresholds, over the stores already ingested."""
    out: dict = {}
    for retrieval, evidence in (("mpnet", "minilm"), ("minilm", "mpnet")):
        key = f"{retrieval} retrieval, {evidence} evidence"
        out[key] = {
            set_name: answers(retrieval, set_name, root / retrieval, work, {}, evidence)
            for set_name in SETS
            if all(path.exists() for path in SETS[set_name][1])
        }
    return out


def interleaved(work: Path) -> dict:
    out = work / "interleaved.json"
    command = [sys.executable, "-m", "bench.embedder_choice", "--interleaved-to", str(out)]
    print("$", *command[1:], flush=True)
    subprocess.run(command, check=True, env=_env(work / "qdrant-unused", ""))
    return json.loads(out.read_text())


def cross_evidence(evidence: str, evals_args: list[str]) -> int:
    """`python -m evals` with the evidence passages ranked and verified by another embedder
    (`chains.evidence.default_embedder`, which `encode_texts` calls) than the one the store
    and the retrieval use (EMBEDDING_MODEL): which of the two moves the answers."""
    from sentence_transformers import SentenceTransformer

    import chains.evidence
    from core.models import resolve_embedding_model
    from evals.cli import main as evals_main

    model = SentenceTransformer(resolve_embedding_model(EMBEDDERS[evidence]), device="cpu")
    chains.evidence.default_embedder = lambda: model
    return evals_main(evals_args)


def answers(
    name: str,
    set_name: str,
    qdrant: Path,
    work: Path,
    extra: dict[str, str],
    evidence: str | None = None,
) -> dict:
    """`python -m evals ... --answer-modes extractive --json`: the last stdout line. With
    `evidence`, the passages are ranked and verified by that embedder (`cross_evidence`)."""
    gold, corpus = SETS[set_name]
    tag = "-".join(
        [name, set_name, *(f"{k}={v}" for k, v in sorted(extra.items()))]
        + ([f"evidence={evidence}"] if evidence else [])
    )
    out = work / f"evals-{tag}"
    command = [sys.executable, "-m", "evals"]
    if evidence:
        command = [sys.executable, "-m", "bench.embedder_choice", "--cross-evidence", evidence]
    command += ["--gold", str(gold)]
    for path in corpus:
        command += ["--corpus", str(path)]
    command += ["--answer-modes", "extractive", "--json", "--no-progress", "--out", str(out)]
    settings = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"$ EMBEDDING_MODEL={EMBEDDERS[name]!r} {settings}", *command[1:], flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        command,
        check=True,
        env=_env(qdrant, EMBEDDERS[name], extra),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    aggregate = json.loads(done.stdout.strip().splitlines()[-1])
    records = json.loads((out / "results.json").read_text())["items"]
    # One answer mode: its variant is named after the model alone ("base").
    variants = {k.split(".")[1] for k in aggregate if k.startswith("answer.")}
    (variant,) = variants
    weak = answered = 0
    modes = set()
    for record in records:
        answer = (record.get("answers") or {}).get(variant)
        if answer is not None:
            modes.add(answer.get("answer_mode"))
            if not answer["abstained"]:
                answered += 1
                weak += bool(answer.get("weak_match"))
    assert modes == {"extractive"}, modes
    prefix = f"answer.{variant}."
    keys = {k.removeprefix(prefix): v for k, v in aggregate.items() if k.startswith(prefix)}
    return {
        "settings": extra,
        "retrieval_embedder": name,
        "evidence_embedder": evidence or name,
        "seconds": round(seconds),
        "answers": {
            m: keys.get(m)
            for m in (
                "key_fact_recall",
                "abstention_accuracy",
                "false_abstention_rate",
                "token_f1",
                "supported_sentence_rate",
                "citation_precision",
            )
        },
        "answered": answered,
        "weak_match": weak,
        "retrieval": {
            mode: {
                "hit@1": aggregate.get(f"retrieval.{mode}.section.hit@1"),
                "hit@k": aggregate.get(f"retrieval.{mode}.section.hit@k"),
                "mrr": aggregate.get(f"retrieval.{mode}.section.mrr"),
            }
            for mode in ("dense", "bm25", "hybrid")
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--cross-evidence"]:
        return cross_evidence(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument(
        "--work", type=Path, default=PROJECT_ROOT / ".cache" / "bench-embedder-choice"
    )
    parser.add_argument("--embedders", default=",".join(EMBEDDERS))
    parser.add_argument("--no-answers", action="store_true", help="skip the extractive answers")
    parser.add_argument("--reuse", action="store_true", help="keep the stores (ingest not timed)")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the .md from the .json in --out"
    )
    parser.add_argument(
        "--interleaved-only",
        action="store_true",
        help="only the interleaved cost step, added to the .json in --out",
    )
    parser.add_argument("--interleaved-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-cross", action="store_true", help="skip the retrieval x evidence-embedder cross runs"
    )
    parser.add_argument(
        "--cross-only",
        action="store_true",
        help="only the cross runs (over the stores of a finished run), added to the .json",
    )
    parser.add_argument("--measure-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads((args.out / "embedder-choice.json").read_text())
        (args.out / "embedder-choice.md").write_text(render(results))
        return 0
    if args.interleaved_to:
        passages = json.loads((args.interleaved_to.parent / "passages-60.json").read_text())
        args.interleaved_to.write_text(json.dumps(interleaved_cost(passages), indent=1) + "\n")
        return 0
    if args.cross_only:
        results = json.loads((args.out / "embedder-choice.json").read_text())
        results["cross"] = cross(args.work.resolve(), _qdrant_root(args.work.resolve()))
        (args.out / "embedder-choice.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "embedder-choice.md").write_text(render(results))
        return 0
    if args.interleaved_only:
        results = json.loads((args.out / "embedder-choice.json").read_text())
        results["interleaved"] = interleaved(args.work.resolve())
        (args.out / "embedder-choice.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "embedder-choice.md").write_text(render(results))
        return 0
    if args.measure_to:
        passages = args.measure_to.parent / "passages-60.json"
        args.measure_to.write_text(json.dumps(measure_here(passages), indent=1) + "\n")
        return 0
    names = [n.strip() for n in args.embedders.split(",") if n.strip()]
    if unknown := [n for n in names if n not in EMBEDDERS]:
        parser.error(f"unknown embedder(s) {unknown}; use {list(EMBEDDERS)}")

    started = time.time()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        (work / "passages-60.json").unlink(missing_ok=True)
    root = _qdrant_root(work)
    results: dict = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "k": K,
        "answers_k": _settings_k(),
        "code": _code_revision(),
        "embedders": {},
    }
    for name in names:
        qdrant = root / name
        if not args.reuse:
            shutil.rmtree(qdrant, ignore_errors=True)
        entry = results["embedders"][name] = measure(name, qdrant, work)
        entry["label"] = LABELS[name]
        if args.no_answers:
            continue
        calibration = entry["calibration"]
        runs = [{}]
        own = {"threshold": calibration["threshold"], "confident": calibration["confident"]}
        if own != calibration["served"]:
            runs.append(
                {
                    "PASSAGE_THRESHOLD": str(own["threshold"]),
                    "PASSAGE_CONFIDENT": str(own["confident"]),
                }
            )
        entry["answers"] = {}
        for set_name in SETS:
            if set_name not in entry["retrieval"]:
                continue
            entry["answers"][set_name] = [answers(name, set_name, qdrant, work, x) for x in runs]
    if set(names) == set(EMBEDDERS) and (work / "passages-60.json").exists():
        results["interleaved"] = interleaved(work)
    if set(names) == set(EMBEDDERS) and not args.no_answers and not args.no_cross:
        results["cross"] = cross(work, root)
    results["seconds"] = round(time.time() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embedder-choice.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "embedder-choice.md").write_text(render(results))
    print(f"wrote {args.out / 'embedder-choice.md'}")
    return 0


# The report --------------------------------------------------------------------------------


def _title(name: str) -> str:
    return "eCFR Parts 97 + 80" if name == "ecfr" else "Sample corpus (data/samples)"


def render(results: dict) -> str:
    embedders = results["embedders"]
    lines = [
        "# Embedder choice: all-MiniLM-L6-v2 vs all-mpnet-base-v2",
        "",
        "`QDRANT_PATH=... python -m bench.embedder_choice`: each embedder in its own process and "
        f"store, the same gold questions; retrieval scored at section level, k = {results['k']} "
        f"(the answers and the evidence encodes retrieve RETRIEVAL_K = "
        f"{results.get('answers_k', '?')} chunks, as the chain does). Machine: "
        f"{results['machine']}, {results['cpus']} CPUs shared with other work (load average "
        f"{results['load_average'][0]:.1f} at the start); {results['seconds']} s in all"
        + (f" (the cross runs apart). Code: {results['code']}." if results.get("code") else "."),
        "",
        "## Cost on this CPU",
        "",
        "| embedder | dim | params | eCFR first ingest, chunks/s (chunks, wall, CPU) | "
        "sample first ingest | query encode p50 / p95 | 60 passages (~40 tok), cold | a question's own "
        "passages, cold p50 / p95 | eCFR hybrid search p50 (query encode included) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in embedders.values():
        ingest = entry["ingest"]

        def rate(name: str, ingest=ingest) -> str:
            row = ingest.get(name)
            if not row or not row["chunks_written"]:
                return "(reused)"
            return (
                f"{row['chunks_per_s']:.2f} ({row['chunks_written']} chunks in "
                f"{row['wall_s']:.0f} s; CPU {row['cpu_s']:.0f} s)"
            )

        query = entry["query_encode"]
        ev = entry.get("evidence_encode", {})
        fixed, per_q = ev.get("fixed"), ev.get("per_question")
        lines.append(
            f"| {entry['label']} | {entry['dim']} | {entry['parameters'] / 1e6:.0f}M | "
            f"{rate('ecfr')} | {rate('sample')} | "
            f"{query['p50_ms']:.0f} / {query['p95_ms']:.0f} ms | "
            + (
                f"{fixed['p50_ms']:.0f} ms ({fixed['passages']} × {fixed['mean_tokens']:.0f} tok) | "
                if fixed
                else "– | "
            )
            + (
                f"{per_q['p50_ms']:.0f} / {per_q['p95_ms']:.0f} ms (median "
                f"{per_q['passages_median']:g} passages) |"
                if per_q
                else "– |"
            )
            + f" {_search_p50(entry)} |"
        )
    lines.append("")
    if "interleaved" in results:
        inter = results["interleaved"]
        lines += [
            f"Interleaved (both models in one process, encodes alternating, best of "
            f"{inter['rounds']} rounds; wall time, and per CPU second in brackets): the same "
            f"{inter['chunks']} Part 97 chunks, {inter['queries']} eCFR questions one at a "
            f"time, and the same {inter['passages']} passages with a cold cache.",
            "",
            f"| embedder | chunk encode chunks/s | query encode | {inter['passages']} passages, "
            "cold |",
            "|---|---:|---:|---:|",
        ]
        for name, row in inter["embedders"].items():
            lines.append(
                f"| {LABELS[name]} | {row['chunks_per_s']:.1f} ({row['chunks_per_cpu_s']:.1f}) | "
                f"{row['query_ms']:.0f} ms ({row['query_cpu_ms']:.0f}) | "
                f"{row['passages_ms']:.0f} ms ({row['passages_cpu_ms']:.0f}) |"
            )
        if set(inter["embedders"]) == set(EMBEDDERS):
            a, b = inter["embedders"]["minilm"], inter["embedders"]["mpnet"]
            lines.append(
                f"| mpnet / MiniLM | {b['chunks_per_s'] / a['chunks_per_s']:.2f}× | "
                f"{b['query_ms'] / a['query_ms']:.1f}× | "
                f"{b['passages_ms'] / a['passages_ms']:.1f}× |"
            )
        lines.append("")
    first = next(iter(embedders.values()))
    for set_name in first["retrieval"]:
        per_set = first["retrieval"][set_name]
        slices = per_set["slices"]
        lines += [
            f"## Retrieval: {_title(set_name)}, "
            + ", ".join(f"{k} {v}" for k, v in slices.items()),
            "",
            "Each cell hit@1 / hit@4 / MRR@4.",
            "",
        ]
        header = ["mode", "embedder", *slices]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", "---"] + ["---:"] * len(slices)) + "|")
        for mode in SHOWN_MODES:
            for entry in embedders.values():
                scores = entry["retrieval"][set_name]["scores"]
                row = [mode, entry["label"]] + [_cell(scores[s][mode]) for s in slices]
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        chunks = ", ".join(
            f"{e['label']} {e['retrieval'][set_name]['chunks']}" for e in embedders.values()
        )
        lines += [f"Chunks: {chunks}.", ""]
    if any("answers" in e for e in embedders.values()):
        lines += [
            "## Extractive answers (`python -m evals --answer-modes extractive`)",
            "",
            "No LLM text: the chain quotes its best passages, ranked and verified by the "
            "embedder. Served thresholds unless the row says otherwise.",
            "",
            "| set | embedder | settings | key-fact recall | abstention (unanswerable) | "
            "false abstention | answered | with the weak-match note | token F1 | s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for set_name in SETS:
            for entry in embedders.values():
                for run in entry.get("answers", {}).get(set_name, []):
                    a = run["answers"]
                    settings = ", ".join(f"{k}={v}" for k, v in run["settings"].items()) or "served"
                    lines.append(
                        f"| {set_name} | {entry['label']} | {settings} | "
                        f"{_f(a['key_fact_recall'])} | {_f(a['abstention_accuracy'])} | "
                        f"{_f(a['false_abstention_rate'])} | {run['answered']} | "
                        f"{run['weak_match']} | {_f(a['token_f1'])} | {run['seconds']} |"
                    )
            for per_set in results.get("cross", {}).values():
                run = per_set.get(set_name)
                if run is None:
                    continue
                a = run["answers"]
                retrieval, evidence = run["retrieval_embedder"], run["evidence_embedder"]
                lines.append(
                    f"| {set_name} | retrieval {LABELS[retrieval].split()[0]}, evidence "
                    f"ranking + verification {LABELS[evidence].split()[0]} | served | "
                    f"{_f(a['key_fact_recall'])} | {_f(a['abstention_accuracy'])} | "
                    f"{_f(a['false_abstention_rate'])} | {run['answered']} | "
                    f"{run['weak_match']} | {_f(a['token_f1'])} | {run['seconds']} |"
                )
        lines.append("")
    lines += [
        "## Passage-score calibration (`bench.abstention`'s rules)",
        "",
        "Per gold item the chain's best passage score (`RagChain.retrieve_only`: "
        "0.6 × cosine + lexical signals), as `python -m bench.abstention` reads it; what its "
        "rules pick under each embedder. PASSAGE_THRESHOLD: highest abstention with false "
        "abstention ≤ 0.1 on every set. PASSAGE_CONFIDENT: largest Youden index of the weaker "
        "set where noted answers are wrong at least half the time (over the answers the given "
        "threshold lets through).",
        "",
        "| embedder | PASSAGE_THRESHOLD picked (served) | PASSAGE_CONFIDENT picked at served "
        "threshold / at its own | set | abstention / false abstention at served | at picked | "
        "top passage in gold | median best score answerable / unanswerable | median best "
        "cosine |",
        "|---|---|---|---|---|---|---:|---|---:|",
    ]
    for entry in embedders.values():
        cal = entry["calibration"]
        for set_name, s in cal["sets"].items():
            served, chosen = s["at_served"], s["at_chosen"]
            med = s["best_score_median"]
            lines.append(
                f"| {entry['label']} | {cal['threshold']} ({cal['served']['threshold']}) | "
                f"{cal['confident_at_served']} / {cal['confident']} "
                f"({cal['served']['confident']}) | {set_name} | "
                + (
                    f"{served['abstention']:.2f} / {served['false_abstention']:.2f} | "
                    if served
                    else "– | "
                )
                + f"{chosen['abstention']:.2f} / {chosen['false_abstention']:.2f} | "
                f"{s['top_passage_in_gold']:.3f} | {_f(med['answerable'])} / "
                f"{_f(med['unanswerable'])} | {s['best_cosine_median']:.3f} |"
            )
    lines.append("")
    if RECOMMENDATION and set(embedders) == set(EMBEDDERS):
        lines += ["## Recommendation", "", " ".join(RECOMMENDATION.split()), ""]
    return "\n".join(lines)


def _search_p50(entry: dict) -> str:
    scores = entry["retrieval"].get("ecfr") or next(iter(entry["retrieval"].values()))
    return f"{scores['scores']['all']['hybrid']['p50_ms']:.0f} ms"


def _f(value) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
