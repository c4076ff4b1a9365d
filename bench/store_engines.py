"""The embedded store's two engines side by side: qdrant-client local mode vs Qdrant Edge.

    python -m bench.store_engines [--sizes 1000,10000,100000] [--queries 20]
        [--skip-quality] [--skip-scale] [--out bench/results]

Quality: the gold sets of `bench.embeddings` (`SETS`: the eCFR gold set over
../shared/fcc-corpus Parts 97 + 80, the sample gold set over data/samples) are ingested once
through the real pipeline; their points (the real chunks, the real MiniLM vectors, the real
payload) are then written into a fresh collection per engine and keyword model, and
`evals.runner.evaluate_retrieval` scores `Retriever.search(k=4)` in dense, BM25 and hybrid
mode (section level: hit@1, hit@4, MRR@4). Keyword models: `hand-written` (the BM25 this
project used before: its own tokens and stopwords, no stemming, a fixed average length of
120 tokens), and Qdrant's BM25 (`core.store.KeywordModel`): `edge-ids` (the default: this
project's tokens, so `15.109` stays one token, and stopwords, no stemming, average length
64, the measured median), `edge-ids/avg120` (the same at the old average length: the
hand-written model's rankings), `edge-ids/stemmed` (English stemmer and stopwords) and
`edge-word/stemmed` (Qdrant's word tokenizer, English stemmer and stopwords).

Scale: a fresh process per engine and size (so RSS is the store's own), on disk in a
temporary folder like the app's store. The collection holds the real chunks of both
corpora, padded with synthetic ones: each synthetic chunk's text is the first half of one
real chunk and the second half of another (random pairs), its dense vector the normalized
mean of the two real vectors plus Gaussian noise (sigma 0.02 per coordinate), its keyword
vector the keyword model's over the recombined text, its payload the first chunk's with a
`synthetic/...` source. Upsert throughput is points/s of the `upsert` calls alone (batches
of 256, as ingestion writes them); Edge then builds its index (`optimize`, timed on its
own). Latency is `Retriever.search(k=4)` per mode with the query embedding computed
beforehand (the same for both engines; MiniLM adds ~10-25 ms on this CPU), over the first
N eCFR gold questions. `overlap@4` is the share of Edge's top 4 that local mode (exact
search) also returns on the very same points. Results: store-engines.json / .md / .png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K = 4
MODES = ("dense", "bm25", "hybrid")
ENGINES = ("local", "edge")
NOISE = 0.02


# The keyword model before this change, kept here as the baseline -------------------------


class HandWrittenBM25:
    """The previous `core.store` BM25: own tokens (stopwords dropped, no stemming), blake2b
    token hashes, k1 1.2, b 0.75, a fixed average length of 120 tokens."""

    signature = "hand-written-bm25"

    def _tokens(self, text: str) -> list[str]:
        from core.store import keyword_tokens

        return keyword_tokens(text)

    @staticmethod
    def _index(token: str) -> int:
        import hashlib

        return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big")

    def document(self, text: str):
        from qdrant_client import models

        counts = Counter(self._tokens(text))
        length = sum(counts.values()) or 1
        norm = 1.2 * (1 - 0.75 + 0.75 * length / 120.0)
        weights: dict[int, float] = {}
        for token, tf in counts.items():
            index = self._index(token)
            weights[index] = weights.get(index, 0.0) + tf * 2.2 / (tf + norm)
        return models.SparseVector(indices=list(weights), values=list(weights.values()))

    def query(self, text: str):
        from qdrant_client import models

        indices = sorted({self._index(t) for t in self._tokens(text)})
        return models.SparseVector(indices=indices, values=[1.0] * len(indices))


def keyword_models() -> dict:
    from core.store import KeywordModel

    return {
        "hand-written": HandWrittenBM25(),
        # Qdrant's BM25 configured as the hand-written one was: the same rankings.
        "edge-ids/avg120": KeywordModel(avg_len=120.0),
        "edge-word/stemmed": KeywordModel(tokenizer="word", stemmer="english", stopwords="english"),
        "edge-ids/stemmed": KeywordModel(stemmer="english", stopwords="english"),
        "edge-ids": KeywordModel(),  # the default
    }


def _use_keyword_model(model) -> None:
    import core.store

    core.store.KEYWORD_MODEL = model


# Helpers --------------------------------------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(at(0.95), 2)}


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def open_engine(engine: str, path: Path):
    from qdrant_client import QdrantClient

    from core.store import EdgeClient

    path.mkdir(parents=True, exist_ok=True)
    return EdgeClient(path) if engine == "edge" else QdrantClient(path=str(path))


def create(client, name: str, dim: int) -> None:
    from core.store import ensure_collection
    from ingest.pipeline import _relax_embedded_fsync

    ensure_collection(client, name, dim, recreate=True)
    _relax_embedded_fsync(client, name)  # what ingestion does for local mode


def to_points(rows: list[dict], model) -> list:
    from qdrant_client import models

    from core.store import CONTENT_KEY, DENSE, SPARSE

    return [
        models.PointStruct(
            id=row["id"],
            vector={DENSE: row["dense"].tolist(), SPARSE: model.document(row["text"])},
            payload=row["payload"] if "payload" in row else {CONTENT_KEY: row["text"]},
        )
        for row in rows
    ]


# Preparing: the real chunks, their vectors, the gold sets -----------------------------------


def prepare(work: Path) -> dict:
    """Ingest both gold corpora (the real pipeline, the default engine); dump their points."""
    from bench.embeddings import SETS
    from bench.embeddings import prepare as prepare_set
    from core.store import CONTENT_KEY, DENSE, get_client

    client = get_client()
    sets = {}
    for name in SETS:
        started = time.perf_counter()
        prepared = prepare_set(name)
        if prepared is None:
            print(f"{name}: corpus not found, skipped", flush=True)
            continue
        collection, items, _ = prepared
        rows, offset = [], None
        while True:
            records, offset = client.scroll(
                collection, limit=1024, offset=offset, with_payload=True, with_vectors=[DENSE]
            )
            for record in records:
                rows.append(
                    {
                        "id": str(record.id),
                        "dense": np.asarray(record.vector[DENSE], dtype=np.float32),
                        "text": record.payload[CONTENT_KEY],
                        "payload": record.payload,
                    }
                )
            if offset is None:
                break
        rows.sort(key=lambda r: r["id"])
        sets[name] = {"rows": rows, "items": items}
        print(f"{name}: {len(rows)} chunks ({time.perf_counter() - started:.0f} s)", flush=True)
    return sets


# Quality ----------------------------------------------------------------------------------


def quality(sets: dict, work: Path) -> dict:
    from bench.embeddings import scores, slices
    from chains.retrieval import Retriever
    from core.store import METADATA_KEY
    from evals.runner import CorpusIndex, evaluate_retrieval

    out: dict = {}
    for set_name, data in sets.items():
        rows, items = data["rows"], data["items"]
        index = CorpusIndex()
        for row in rows:
            meta = row["payload"].get(METADATA_KEY) or {}
            index.add(meta.get("source"), meta.get("section"))
        ids = slices(set_name, items)["all"]
        dim = len(rows[0]["dense"])
        for engine in ENGINES:
            client = open_engine(engine, work / f"quality-{engine}")
            for label, model in keyword_models().items():
                _use_keyword_model(model)
                name = f"{set_name}_" + re.sub(r"\W", "_", label)
                create(client, name, dim)
                points = to_points(rows, model)
                for start in range(0, len(points), 256):
                    client.upsert(name, points=points[start : start + 256], wait=True)
                if engine == "edge":
                    client.optimize(name)
                retriever = Retriever(name, client=client)
                retriever.search("warm-up", k=K)
                records = evaluate_retrieval(retriever, items, index, K, MODES, progress=False)
                result = scores(records, ids)
                out.setdefault(set_name, {}).setdefault(engine, {})[label] = {
                    "chunks": len(rows),
                    "items": len(ids),
                    **{mode: result[mode] for mode in MODES},
                    "top": {
                        i: {
                            m: [c["id"] for c in records[i]["modes"][m]["retrieved"]] for m in MODES
                        }
                        for i in ids
                    },
                }
                hybrid = result["hybrid"]
                print(
                    f"quality {set_name:6s} {engine:5s} {label:12s} hybrid hit@1 "
                    f"{hybrid['hit@1']:.3f} hit@4 {hybrid['hit@k']:.3f} MRR {hybrid['mrr']:.3f}",
                    flush=True,
                )
            client.close()
    import core.store

    _use_keyword_model(core.store.KeywordModel())
    for per_engine in out.values():  # how often Edge ranks the top 4 exactly as local mode
        for label, row in per_engine.get("edge", {}).items():
            local = per_engine.get("local", {}).get(label)
            if local:
                row["same_top4_as_local"] = {
                    mode: round(
                        statistics.fmean(
                            row["top"][i][mode] == local["top"][i][mode] for i in row["top"]
                        ),
                        3,
                    )
                    for mode in MODES
                }
        for per_model in per_engine.values():
            for row in per_model.values():
                row.pop("top", None)
    return out


# Scale ------------------------------------------------------------------------------------------


def synthetic_rows(real: list[dict], size: int, seed: int = 0):
    """The real rows, then recombined ones, in batches of 256 (deterministic by seed)."""
    from core.store import CONTENT_KEY, METADATA_KEY

    rng = np.random.default_rng(seed)
    halves = []
    for row in real:
        words = row["text"].split()
        middle = len(words) // 2
        halves.append((" ".join(words[:middle]), " ".join(words[middle:])))
    dense = np.stack([row["dense"] for row in real])
    dim = dense.shape[1]
    batch: list[dict] = []
    for index in range(size):
        if index < len(real):
            row = real[index]
        else:
            a, b = (int(x) for x in rng.integers(0, len(real), 2))
            vector = dense[a] + dense[b] + rng.normal(0.0, NOISE, dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            text = f"{halves[a][0]} {halves[b][1]}"
            meta = dict(real[a]["payload"].get(METADATA_KEY) or {})
            meta["source"] = f"synthetic/{index // len(real)}/{meta.get('source')}"
            row = {
                "id": str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | index)),
                "dense": vector,
                "text": text,
                "payload": {CONTENT_KEY: text, METADATA_KEY: meta},
            }
        batch.append(row)
        if len(batch) == 256:
            yield batch
            batch = []
    if batch:
        yield batch


def worker(engine: str, size: int, work: Path) -> dict:
    """One engine, one size, in this process: load, index, query; RSS of this process."""
    from chains.retrieval import Retriever
    from core.store import KEYWORD_MODEL

    with open(work / "real.pkl", "rb") as f:
        real = pickle.load(f)
    with open(work / "queries.pkl", "rb") as f:
        queries: dict[str, np.ndarray] = pickle.load(f)
    rss_before = rss_mb()
    folder = work / f"scale-{engine}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    client = open_engine(engine, folder)
    name = "bench"
    create(client, name, len(real[0]["dense"]))
    upsert_s = 0.0
    for rows in synthetic_rows(real, size):
        points = to_points(rows, KEYWORD_MODEL)
        started = time.perf_counter()
        client.upsert(name, points=points, wait=True)
        upsert_s += time.perf_counter() - started
    result: dict = {
        "engine": engine,
        "size": size,
        "upsert_s": round(upsert_s, 2),
        "upsert_points_per_s": round(size / upsert_s, 1),
    }
    retriever = Retriever(name, client=client)
    retriever.embed_query = queries.__getitem__
    texts = list(queries)

    def run(mode: str) -> tuple[dict, dict]:
        for text in texts[:2]:
            retriever.search(text, k=K, mode=mode)  # warm-up
        seconds, top = [], {}
        for text in texts:
            started = time.perf_counter()
            hits = retriever.search(text, k=K, mode=mode)
            seconds.append(time.perf_counter() - started)
            top[text] = [hit.id for hit in hits]
        return _percentiles(seconds), top

    if engine == "edge":
        result["before_optimize"] = {"hybrid": run("hybrid")[0]}
        started = time.perf_counter()
        client.optimize(name)
        result["optimize_s"] = round(time.perf_counter() - started, 2)
    assert retriever.count() == size, retriever.count()
    result["rss_loaded_mb"] = round(rss_mb() - rss_before, 1)
    result["top"] = {}
    for mode in MODES:
        result[mode], result["top"][mode] = run(mode)
    result["rss_mb"] = round(rss_mb() - rss_before, 1)
    result["rss_total_mb"] = round(rss_mb(), 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    client.close()
    result["disk_mb"] = round(_dir_mb(folder), 1)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def scale(sets: dict, sizes: list[int], n_queries: int, work: Path, engines) -> list[dict]:
    from core.store import get_sentence_model

    real = [row for data in sets.values() for row in data["rows"]]
    questions = [item.question for item in sets["ecfr"]["items"] if item.answerable][:n_queries]
    model = get_sentence_model()
    vectors = model.encode(questions, normalize_embeddings=True, convert_to_numpy=True)
    with open(work / "real.pkl", "wb") as f:
        pickle.dump(real, f)
    with open(work / "queries.pkl", "wb") as f:
        pickle.dump(dict(zip(questions, vectors.astype(np.float32), strict=True)), f)
    results = []
    for size in sizes:
        for engine in engines:
            started = time.perf_counter()
            command = [sys.executable, "-m", "bench.store_engines", "--worker", engine,
                       "--size", str(size), "--work", str(work)]  # fmt: skip
            env = dict(os.environ, QDRANT_PATH=str(work / "worker-store"))
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                results.append({"engine": engine, "size": size, "error": done.stderr[-500:]})
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"scale {engine:5s} {size:>8,}: upsert {result['upsert_points_per_s']:.0f} pt/s, "
                + ", ".join(
                    f"{m} {result[m]['p50_ms']:.1f}/{result[m]['p95_ms']:.1f} ms" for m in MODES
                )
                + f", RSS +{result['rss_mb']:.0f} MB ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    for size in sizes:
        by_engine = {r["engine"]: r for r in results if r["size"] == size and "top" in r}
        if {"edge", "local"} <= set(by_engine):
            edge, local = by_engine["edge"], by_engine["local"]
            edge["overlap@4"] = {
                mode: round(
                    statistics.fmean(
                        len(set(edge["top"][mode][q]) & set(local["top"][mode][q]))
                        / max(1, len(edge["top"][mode][q]))
                        for q in edge["top"][mode]
                    ),
                    3,
                )
                for mode in MODES
            }
    for result in results:
        result.pop("top", None)  # compared above; the ids themselves say nothing
    return results


# Report -------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def render(results: dict) -> str:
    lines = [
        "# Embedded store engines: qdrant-client local mode vs Qdrant Edge",
        "",
        f"`python -m bench.store_engines` on {results['machine']} ({results['cpus']} CPUs, "
        f"shared with other work); qdrant-client {results['versions']['qdrant-client']}, "
        f"qdrant-edge-py {results['versions']['qdrant-edge-py']}. How the data is built: the "
        "module docstring.",
        "",
    ]
    scale_rows = [r for r in results.get("scale", []) if "error" not in r]
    if scale_rows:
        lines += [
            "## Latency, ingest and memory by collection size",
            "",
            "`Retriever.search(k=4)`, query embedding excluded, p50 / p95. Upsert: points/s of "
            "the upsert calls (Edge's index build after it: `optimize`). RSS: growth of the "
            "process's resident memory over the empty store, after the queries.",
            "",
            "| points | engine | dense | bm25 | hybrid | upsert pt/s | index build | RSS | disk | overlap@4 d/b/h |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in scale_rows:
            overlap = r.get("overlap@4")
            lines.append(
                f"| {r['size']:,} | {r['engine']} | "
                + " | ".join(f"{_ms(r[m]['p50_ms'])} / {_ms(r[m]['p95_ms'])}" for m in MODES)
                + f" | {r['upsert_points_per_s']:,.0f} | "
                + (f"{r['optimize_s']:.1f} s" if "optimize_s" in r else "–")
                + f" | {r['rss_mb']:,.0f} MB | {r['disk_mb']:,.0f} MB | "
                + ("/".join(f"{overlap[m]:.2f}" for m in MODES) if overlap else "")
                + " |"
            )
        lines.append("")
        before = [r for r in scale_rows if "before_optimize" in r]
        if before:
            lines.append(
                "Edge before `optimize` (plain segments, no HNSW), hybrid p50 / p95: "
                + ", ".join(
                    f"{r['size']:,}: {_ms(r['before_optimize']['hybrid']['p50_ms'])} / "
                    f"{_ms(r['before_optimize']['hybrid']['p95_ms'])}"
                    for r in before
                )
                + "."
            )
            lines.append("")
        lines += ["![latency by size](store-engines.png)", ""]
    for set_name, per_engine in results.get("quality", {}).items():
        first = next(iter(next(iter(per_engine.values())).values()))
        title = "eCFR Parts 97 + 80" if set_name == "ecfr" else "Sample corpus (data/samples)"
        lines += [
            f"## Quality: {title}, {first['chunks']} chunks, {first['items']} answerable items",
            "",
            "Section level, k = 4: hit@1 / hit@4 / MRR@4.",
            "",
            "| engine | keyword model | dense | bm25 | hybrid | same top 4 as local d/b/h |",
            "|---|---|---:|---:|---:|---|",
        ]
        for engine, per_model in per_engine.items():
            for label, row in per_model.items():
                cells = [
                    f"{row[m]['hit@1']:.3f} / {row[m]['hit@k']:.3f} / {row[m]['mrr']:.3f}"
                    for m in MODES
                ]
                same = row.get("same_top4_as_local")
                cells.append("/".join(f"{same[m]:.2f}" for m in MODES) if same else "")
                lines.append(f"| {engine} | {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += results.get("notes", [])
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("scale", []) if "error" not in r]
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for axis, mode in zip(axes, MODES, strict=True):
        for engine, style in (("local", "o-"), ("edge", "s-")):
            points = sorted((r["size"], r[mode]) for r in rows if r["engine"] == engine)
            if not points:
                continue
            sizes = [p[0] for p in points]
            axis.plot(sizes, [p[1]["p95_ms"] for p in points], style, label=f"{engine} p95")
            axis.plot(sizes, [p[1]["p50_ms"] for p in points], style, alpha=0.4,
                      label=f"{engine} p50")  # fmt: skip
        axis.axhline(50, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(mode)
        axis.set_xlabel("points")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("Retriever.search ms (no query embedding)")
    axes[0].legend()
    fig.suptitle("Embedded Qdrant: local mode vs Edge (dotted: 50 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--notes", type=Path, help="markdown appended to the report (kept)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--worker", choices=ENGINES)
    parser.add_argument("--size", type=int)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.work)))
        return 0

    from importlib.metadata import version

    work = args.work or Path(tempfile.mkdtemp(prefix="store-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["QDRANT_PATH"] = str(work / "store")  # before the settings are read
    results: dict = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {p: version(p) for p in ("qdrant-client", "qdrant-edge-py")},
        "k": K,
        "noise_sigma": NOISE,
    }
    out_json = args.out / "store-engines.json"
    if out_json.exists():  # keep the part of an earlier run this one skips
        previous = json.loads(out_json.read_text())
        for key in ("quality", "scale", "notes"):
            if key in previous:
                results[key] = previous[key]
    if args.notes:
        results["notes"] = ["", *args.notes.read_text().splitlines()]
    rerender = args.skip_quality and args.skip_scale
    sets = {} if rerender else prepare(work)
    if not args.skip_quality:
        results["quality"] = quality(sets, work)
    if not args.skip_scale:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        fresh = scale(sets, sizes, args.queries, work, engines)
        kept = [
            r
            for r in results.get("scale", [])
            if (r["engine"], r["size"]) not in {(f["engine"], f["size"]) for f in fresh}
        ]
        results["scale"] = sorted(kept + fresh, key=lambda r: (r["size"], r["engine"]))
    from core.store import close_clients

    close_clients()
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "store-engines.md").write_text(render(results))
    plot(results, args.out / "store-engines.png")
    print(f"wrote {args.out / 'store-engines.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
