"""Concurrent answers: today's one-at-a-time queue against batched decoding, same run, same prompts.

    python -m bench.batching [--requests 16] [--concurrency 1 4 16] [--max-tokens 64]

The prompts are the served RAG prompts (raw answer mode: the numbered sources and the
question, as the chat builds them) for distinct questions over the sample corpus, answered
by the default model with the default adapter (LOCAL_ADAPTER_PATH), greedy, with the RAG
stop strings. For each concurrency c, the same `--requests` prompts are sent with at most c
in flight, through two chat models: `max_batch_size=1` (the queue) and `--batch` (16;
GENERATION_BATCH_SIZE in the app). Reported: wall time, aggregate output tokens/s, latency
and first-token p50/p95, the batch sizes that formed, and whether every answer equals its
one-at-a-time answer. Results: bench/results/batching.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.load import QUESTIONS, SAMPLE_CORPUS, percentile
from core.settings import PROJECT_ROOT, get_settings

RESULTS = PROJECT_ROOT / "bench" / "results"
# The chat models live until the interpreter exits: a generation thread that ends during
# interpreter shutdown aborts the process (chains.generation.GenerationWorker).
_KEEP: list = []


def prompts_for(chain, questions: list[str]) -> list[list]:
    """The messages the model sees for each question (abstentions have none: skipped)."""
    prompts = []
    for question in questions:
        prepared = chain._prepare(question, None, None, None, None, "raw", {})
        if prepared.messages is not None:
            prompts.append(prepared.messages)
    return prompts


def served_prompts(llm) -> list[list]:
    """The served RAG prompts for QUESTIONS over the sample corpus (a temporary store)."""
    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from core.store import close_clients
    from ingest.pipeline import ingest_paths

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as store:
        settings.qdrant_path = Path(store)
        try:
            ingest_paths([SAMPLE_CORPUS], collection="bench_batching", progress=False)
            return prompts_for(RagChain(llm, Retriever("bench_batching")), list(QUESTIONS))
        finally:
            close_clients()


def machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)}, {device}"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}"


def one(llm, messages, max_tokens: int, stop: list[str]) -> dict:
    started = time.perf_counter()
    first = None
    text, tokens = "", 0
    for chunk in llm.stream(messages, max_new_tokens=max_tokens, stop=stop):
        if chunk.content and first is None:
            first = time.perf_counter() - started
        text += chunk.content
        if chunk.usage_metadata:
            tokens = chunk.usage_metadata["output_tokens"]
    return {
        "text": text,
        "tokens": tokens,
        "first_s": first,
        "total_s": time.perf_counter() - started,
    }


def run_at(llm, prompts, concurrency: int, max_tokens: int, stop: list[str]) -> dict:
    before = llm._worker.stats()
    gate = threading.Semaphore(concurrency)

    def task(messages):
        with gate:
            return one(llm, messages, max_tokens, stop)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        replies = list(pool.map(task, prompts))
    wall = time.perf_counter() - started
    after = llm._worker.stats()
    batches = after["batches"] - before["batches"]
    tokens = sum(r["tokens"] for r in replies)
    return {
        "wall_s": round(wall, 2),
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "latency_s": {
            "p50": percentile([r["total_s"] for r in replies], 0.5),
            "p95": percentile([r["total_s"] for r in replies], 0.95),
        },
        "first_token_s": {
            "p50": percentile([r["first_s"] for r in replies if r["first_s"]], 0.5),
            "p95": percentile([r["first_s"] for r in replies if r["first_s"]], 0.95),
        },
        "batches": batches,
        "mean_batch": round((after["generations"] - before["generations"]) / max(batches, 1), 2),
        "texts": [r["text"] for r in replies],
    }


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "batching.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Concurrent answers: one-at-a-time queue vs batched decoding",
        "",
        f"{result['requests']} served RAG prompts (sample corpus, raw mode, {result['model']}, "
        f"adapter {result['adapter'] or 'none'}), greedy, max_tokens {result['max_tokens']}, "
        f"RAG stop strings; {result['machine']}; `python -m bench.batching` on {result['date']}.",
        "",
        "| concurrency | decoding | wall (s) | output tok/s | speed-up | latency p50 / p95 (s) "
        "| first token p50 / p95 (s) | mean batch | same text as alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, runs in result["runs"].items():
        base = runs["queue"]["tokens_per_s"]
        for name in ("queue", "batched"):
            r = runs[name]
            lines.append(
                f"| {c} | {name} | {r['wall_s']} | {r['tokens_per_s']} | "
                f"{r['tokens_per_s'] / base:.2f}x | {r['latency_s']['p50']} / {r['latency_s']['p95']} | "
                f"{r['first_token_s']['p50']} / {r['first_token_s']['p95']} | {r['mean_batch']} | "
                f"{r['identical']}/{result['requests']} |"
            )
    (out / "batching.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    levels = list(result["runs"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name in ("queue", "batched"):
        ax.plot(levels, [result["runs"][c][name]["tokens_per_s"] for c in levels], "o-", label=name)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("aggregate output tokens/s")
    ax.set_title("Decoding throughput under concurrency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "batching.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batching", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="the batched model's max batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--save-prompts", type=Path, help="write the prompts as JSON (to replay on a GPU machine)"
    )
    parser.add_argument(
        "--prompts", type=Path, help="replay prompts saved by --save-prompts (no store needed)"
    )
    args = parser.parse_args(argv)

    from chains.llm import QLoRAChatModel, to_chat_dicts
    from chains.prompts import RAG_STOP

    settings = get_settings()
    adapter = settings.local_adapter_path
    models = {
        "queue": QLoRAChatModel(
            temperature=0.0, repetition_penalty=1.0, adapter=adapter, max_batch_size=1
        ),
        "batched": QLoRAChatModel(
            temperature=0.0, repetition_penalty=1.0, adapter=adapter, max_batch_size=args.batch
        ),
    }
    _KEEP.append(models)
    if args.prompts is not None:
        prompts = json.loads(args.prompts.read_text())[: args.requests]
    else:
        prompts = served_prompts(models["queue"])[: args.requests]
    if args.save_prompts is not None:
        args.save_prompts.write_text(json.dumps([to_chat_dicts(p) for p in prompts], indent=1))
    stop = list(RAG_STOP)
    for llm in models.values():  # warm-up: each instance's first generations are slower
        one(llm, prompts[0], 8, stop)
    reference = [one(models["queue"], p, args.max_tokens, stop)["text"] for p in prompts]
    runs = {}
    for index, c in enumerate(args.concurrency):
        runs[str(c)] = {}
        order = list(models.items())[:: -1 if index % 2 else 1]  # neither always goes first
        for name, llm in order:
            run = run_at(llm, prompts, c, args.max_tokens, stop)
            texts = run.pop("texts")
            run["identical"] = sum(a == b for a, b in zip(texts, reference, strict=True))
            runs[str(c)][name] = run
            print(
                f"c={c} {name}: {run['tokens_per_s']} tok/s, wall {run['wall_s']} s, "
                f"mean batch {run['mean_batch']}, identical {run['identical']}",
                flush=True,
            )
    info = models["batched"].info()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(str(info.get("device"))),
        "model": info.get("model"),
        "adapter": adapter,
        "requests": len(prompts),
        "max_tokens": args.max_tokens,
        "batch_size": args.batch,
        "runs": runs,
    }
    write_report(result, args.out)
    print((args.out / "batching.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
