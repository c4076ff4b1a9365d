"""Streaming cost of the chat model against raw `model.generate`, and RAG latency by stage.

    python -m bench.generation [--device cpu|cuda] [--quantization 4bit|8bit|none|auto]
                               [--model NAME_OR_PATH] [--reps 7] [--max-new-tokens 64]
                               [--collection NAME | --skip-rag]

Throughput: the same prompt and settings (greedy) go to `QLoRAChatModel.stream` (chat
template, worker thread, token-by-token streamer, lock) and to a plain
`model.generate(**inputs)` on pre-tokenized inputs, interleaved rep by rep (the order
alternates), after a warm-up. Raw time-to-first-token is a `generate(max_new_tokens=1)`
call; the stream's is the arrival of its first text. Two prompts: a short chat question and
a RAG-sized prompt (`build_rag_messages` with ~4 chunks of the sample corpus). Medians of
per-rep pairs are reported. Goals: stream tokens/s >= 0.95 x raw, first-token overhead < 50 ms.

RAG latency: `RagChain.invoke` on gold questions, split into retrieve, prefill (generation
start -> first token) and decode. Without --collection the sample corpus is ingested into a
temporary embedded store first (not timed).

Results: bench/results/generation-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_CORPUS = ROOT / "data" / "samples"
GOLD = ROOT / "data" / "eval" / "gold.jsonl"
CHAT_PROMPT = (
    "Explain in a few sentences what the FCC regulates and why radio equipment needs authorization."
)
RAG_QUESTION = (
    "What is the radiated emission limit for a Class B digital device between 88 and 216 MHz?"
)
THROUGHPUT_GOAL = 0.95
FIRST_TOKEN_GOAL_MS = 50.0


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rag_sized_messages(chat, chunk_tokens: int = 200, chunks: int = 4) -> list[dict]:
    """build_rag_messages with `chunks` slices of a sample-corpus file, ~chunk_tokens each."""
    from chains.prompts import build_rag_messages

    text = (SAMPLE_CORPUS / "part15_unintentional_radiators.md").read_text()
    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"]
    sources = [
        {
            "n": i + 1,
            "source": "part15_unintentional_radiators.md",
            "section": "15.109",
            "text": chat.tokenizer.decode(ids[i * chunk_tokens : (i + 1) * chunk_tokens]),
        }
        for i in range(chunks)
    ]
    return build_rag_messages(RAG_QUESTION, sources)


class _Clock:
    def __init__(self, device: str):
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def time_raw(chat, inputs, kwargs, clock: _Clock) -> dict:
    import torch

    model = chat.model
    with torch.inference_mode():
        start = clock.now()
        model.generate(**inputs, **{**kwargs, "max_new_tokens": 1})
        first = clock.now() - start
        start = clock.now()
        output = model.generate(**inputs, **kwargs)
        total = clock.now() - start
    tokens = int(output.shape[1] - inputs["input_ids"].shape[1])
    text = chat.tokenizer.decode(
        output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    return {"first_token_s": first, "total_s": total, "tokens": tokens, "text": text}


def time_stream(chat, messages, max_new_tokens: int, clock: _Clock) -> dict:
    parts, first, usage = [], None, {}
    start = clock.now()
    for chunk in chat.stream(messages, max_new_tokens=max_new_tokens):
        if chunk.content and first is None:
            first = time.perf_counter() - start
        parts.append(chunk.content)
        usage = chunk.usage_metadata or usage
    total = clock.now() - start
    return {
        "first_token_s": first,
        "total_s": total,
        "tokens": usage.get("output_tokens", 0),
        "text": "".join(parts),
    }


def streamer_cost_us(chat, text: str, repeats: int = 20) -> float:
    """CPU cost of the token-by-token streamer (incremental decode + hand-off) per token, in µs."""
    import torch

    from chains.llm import TokenStreamer

    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
    tokens = [torch.tensor([[i]]) for i in ids]
    started = time.perf_counter()
    for _ in range(repeats):
        out: list = []
        streamer = TokenStreamer(chat.tokenizer, out.append)
        streamer.put(torch.tensor([[0]]))  # the prompt, skipped
        for token in tokens:
            streamer.put(token)
        streamer.end()
    return (time.perf_counter() - started) / (repeats * len(tokens)) * 1e6


def _rates(run: dict) -> tuple[float, float | None]:
    overall = run["tokens"] / run["total_s"]
    decode_time = (
        run["total_s"] - run["first_token_s"] if run["first_token_s"] is not None else None
    )
    decode = (run["tokens"] - 1) / decode_time if decode_time and run["tokens"] > 1 else None
    return overall, decode


def bench_prompt(chat, messages, max_new_tokens: int, reps: int, clock: _Clock) -> dict:
    inputs = {k: v.to(chat.model.device) for k, v in chat._encode(messages).items()}
    kwargs = chat.generation_kwargs(max_new_tokens=max_new_tokens)
    time_raw(chat, inputs, kwargs, clock)  # warm-up
    time_stream(chat, messages, max_new_tokens, clock)
    raws, streams = [], []
    for rep in range(reps):
        order = ("raw", "stream") if rep % 2 == 0 else ("stream", "raw")
        for which in order:
            if which == "raw":
                raws.append(time_raw(chat, inputs, kwargs, clock))
            else:
                streams.append(time_stream(chat, messages, max_new_tokens, clock))
    same_text = all(r["text"] == s["text"] for r, s in zip(raws, streams, strict=True))
    ratios = [_rates(s)[0] / _rates(r)[0] for r, s in zip(raws, streams, strict=True)]
    overheads = [
        (s["first_token_s"] - r["first_token_s"]) * 1000 for r, s in zip(raws, streams, strict=True)
    ]
    return {
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": raws[0]["tokens"],
        "same_output": same_text,
        "raw": {
            "tokens_per_s": median(_rates(r)[0] for r in raws),
            "decode_tokens_per_s": median(_rates(r)[1] for r in raws),
            "first_token_ms": median(r["first_token_s"] * 1000 for r in raws),
            "total_s": median(r["total_s"] for r in raws),
        },
        "stream": {
            "tokens_per_s": median(_rates(s)[0] for s in streams),
            "decode_tokens_per_s": median(_rates(s)[1] for s in streams),
            "first_token_ms": median(s["first_token_s"] * 1000 for s in streams),
            "total_s": median(s["total_s"] for s in streams),
        },
        "streamer_us_per_token": streamer_cost_us(chat, streams[0]["text"]),
        "throughput_ratio": median(ratios),
        "throughput_ratio_min": min(ratios),
        "first_token_overhead_ms": median(overheads),
        "reps": reps,
    }


def bench_rag(chat, collection: str | None, max_new_tokens: int, questions: int) -> dict:
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    ingest_s = None
    if collection is None:
        from ingest.pipeline import ingest_paths

        collection = "bench_generation"
        started = time.perf_counter()
        ingest_paths([SAMPLE_CORPUS], collection=collection, recreate=True, progress=False)
        ingest_s = time.perf_counter() - started
    chain = RagChain(chat, Retriever(collection))
    items = [json.loads(line) for line in GOLD.read_text().splitlines() if line.strip()]
    items = [i for i in items if i.get("answerable", True)][:questions]
    chain.invoke(items[0]["question"], max_new_tokens=4)  # warm-up (embedder, caches)
    runs = []
    for item in items:
        result = chain.invoke(item["question"], max_new_tokens=max_new_tokens)
        if result.error:
            raise RuntimeError(result.error)
        t = result.timings
        runs.append(
            {
                "retrieve_s": t["retrieve_s"],
                "prefill_s": t.get("prefill_s"),
                "decode_s": t.get("decode_s"),
                "first_token_s": t["first_token_s"],
                "total_s": t["total_s"],
                "prompt_tokens": result.usage["prompt_tokens"],
                "completion_tokens": result.usage["completion_tokens"],
                "abstained": result.abstained,
            }
        )
    keys = (
        "retrieve_s",
        "prefill_s",
        "decode_s",
        "first_token_s",
        "total_s",
        "prompt_tokens",
        "completion_tokens",
    )
    return {
        "collection": collection,
        "ingest_s": ingest_s,
        "questions": len(runs),
        "abstained": sum(r["abstained"] for r in runs),
        "median": {k: median(r[k] for r in runs) for k in keys},
        "runs": runs,
    }


def environment(chat) -> dict:
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "model": chat.info(),
    }
    if chat.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


def render_markdown(report: dict) -> str:
    model = report["environment"]["model"]
    lines = [
        f"# Generation benchmark ({report['device']})",
        "",
        f"{report['timestamp']} · model {model['model']} · {model['device']} · {model['quantization']} "
        f"· {model['dtype']} · greedy, {report['max_new_tokens']} new tokens · medians of {report['reps']} "
        "interleaved reps after a warm-up.",
    ]
    if "load_average" in report["environment"]:
        lines.append(
            f"Load average at the end: {', '.join(f'{x:.1f}' for x in report['environment']['load_average'])} "
            f"on {report['environment']['cpu_count']} cores (shared machine: absolute numbers are noisy, "
            "the paired ratios less so)."
        )
    lines += [
        "",
        "## `QLoRAChatModel.stream` vs raw `model.generate`",
        "",
        "| prompt | prompt tok | new tok | raw tok/s | stream tok/s | paired ratio (goal ≥ 0.95) | raw first token | stream first token | paired overhead (goal < 50 ms) | streamer cost/token | same output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in report["prompts"].items():
        lines.append(
            f"| {name} | {r['prompt_tokens']} | {r['new_tokens']} | {r['raw']['tokens_per_s']:.1f} | "
            f"{r['stream']['tokens_per_s']:.1f} | {r['throughput_ratio']:.3f} | {r['raw']['first_token_ms']:.0f} ms | "
            f"{r['stream']['first_token_ms']:.0f} ms | {r['first_token_overhead_ms']:+.1f} ms | "
            f"{r['streamer_us_per_token']:.0f} µs | {r['same_output']} |"
        )
    goals = report["goals"]
    lines += [
        "",
        f"Goals: throughput ratio ≥ {THROUGHPUT_GOAL}: **{'met' if goals['throughput'] else 'not met'}**; "
        f"first-token overhead < {FIRST_TOKEN_GOAL_MS:.0f} ms: **{'met' if goals['first_token'] else 'not met'}**.",
        "",
        "Tokens/s counts all new tokens over the whole call (prefill included); decode-only rates "
        "are in the JSON. The ratio and the overhead are medians of per-rep pairs (stream vs raw "
        "run back to back), so they need not equal the ratio of the column medians. The streamer "
        "cost is the CPU time of the incremental decode and hand-off per token, measured alone.",
    ]
    rag = report.get("rag")
    if rag:
        m = rag["median"]
        lines += [
            "",
            f"## RAG latency by stage ({rag['questions']} gold questions, collection `{rag['collection']}`)",
            "",
            "| stage | median |",
            "|---|---:|",
            f"| retrieve (embed query + hybrid search) | {m['retrieve_s'] * 1000:.0f} ms |",
            f"| prefill (generation start → first token, {m['prompt_tokens']:.0f} prompt tokens) | {m['prefill_s'] * 1000:.0f} ms |",
            f"| decode ({m['completion_tokens']:.0f} tokens) | {m['decode_s'] * 1000:.0f} ms |",
            f"| first token (from the call) | {m['first_token_s'] * 1000:.0f} ms |",
            f"| total | {m['total_s'] * 1000:.0f} ms |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--quantization", default=None, help="4bit | 8bit | none | auto (default: QUANTIZATION)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="base model id or folder (default: LOCAL_BASE_MODEL_PATH / bundled)",
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--questions", type=int, default=5, help="gold questions for the RAG breakdown"
    )
    parser.add_argument(
        "--collection", default=None, help="use this ingested collection for the RAG breakdown"
    )
    parser.add_argument("--skip-rag", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # On a busy CPU, OpenMP threads that spin-wait make `generate` in the main thread several
    # times slower than in a fresh thread (measured 5-8x here at load 7 on 2 cores), which
    # would flatter the streamed path. Passive waiting makes both paths equal; set it
    # explicitly to another value to measure that effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.collection is None and not args.skip_rag:
        # A private store: never the app's (the embedded store allows one process per folder).
        os.environ["QDRANT_PATH"] = tempfile.mkdtemp(prefix="bench-generation-")
    from chains.llm import QLoRAChatModel  # imports torch: after the environment is set
    from core.modeling import pick_device

    device = pick_device(args.device)
    chat = QLoRAChatModel.load(
        args.model, quantization=args.quantization, device=device, temperature=0.0
    )
    clock = _Clock(device)
    prompts = {
        "chat": [{"role": "user", "content": CHAT_PROMPT}],
        "rag": rag_sized_messages(chat),
    }
    report = {
        "device": device.split(":")[0],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_new_tokens": args.max_new_tokens,
        "reps": args.reps,
        "prompts": {},
    }
    for name, messages in prompts.items():
        print(f"benchmarking the {name} prompt ...", file=sys.stderr, flush=True)
        report["prompts"][name] = bench_prompt(
            chat, messages, args.max_new_tokens, args.reps, clock
        )
    if not args.skip_rag:
        print("benchmarking RAG latency ...", file=sys.stderr, flush=True)
        report["rag"] = bench_rag(chat, args.collection, args.max_new_tokens, args.questions)
    ratios = [r["throughput_ratio"] for r in report["prompts"].values()]
    overheads = [r["first_token_overhead_ms"] for r in report["prompts"].values()]
    report["goals"] = {
        "throughput": min(ratios) >= THROUGHPUT_GOAL,
        "first_token": max(overheads) < FIRST_TOKEN_GOAL_MS,
    }
    report["environment"] = environment(chat)

    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"generation-{report['device']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    from core.store import close_clients

    close_clients()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
