"""Data-parallel training throughput: `finetune train` in 1, 2, 4 and 8 processes (one per GPU).

    python -m bench.train_scaling                      # Llama-3.2-1B shape, 1 2 4 8 GPUs
    python -m bench.train_scaling --num-processes 1 2 --shape tiny --device cpu   # a smoke test

The base is a Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32 heads with 8 KV heads,
MLP 8192, vocabulary 128256, tied embeddings) built from a config with random weights and saved
once to a temporary folder with the default tokenizer (its ids all fit the larger vocabulary), so
no download is needed; throughput does not depend on the weights' values. `--shape tiny` is a
toy of the same family for CPU checks.

Each count N runs the CLI exactly as a user would, through `finetune.distributed.launch_argv`
(accelerate's launcher, `--multi_gpu`, for N > 1; NCCL on GPUs, gloo on the CPU), in its own
process tree with the caller's environment untouched (NCCL_NVLS_ENABLE=0 and the like pass
through). The per-device batch is fixed (weak scaling): N processes train N times the rows per
optimizer step. tokens/s is the run's own figure from training_info.json: the real (non-pad)
tokens of the rows trained (over all ranks) divided by the trainer's train_runtime (loading and
tokenisation excluded). Speed-up = tokens/s(N) / tokens/s(1); efficiency = speed-up / N. Peak
memory is rank 0's GPU. A count above the GPUs visible is skipped.

Results: bench/results/train-scaling-<device>.json and .md (or --out STEM). Goals for QLoRA on
one host: >= 1.8x at 2 GPUs, >= 3.4x at 4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.train import DEFAULT_DATA, RESULTS, ROOT  # the same data and folders as bench.train

SHAPES = {
    # meta-llama/Llama-3.2-1B's config.json
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    # meta-llama/Llama-3.1-8B's config.json
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    # a toy of the same family, for checking the script on the CPU
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=49152,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
}
GPU_ARGS = (
    "--quantization 4bit --batch-size 8 --grad-accum 1 --max-length 1024 --lora-r 8 "
    "--lora-alpha 16 --target-modules all-linear --max-steps 40 --warmup-ratio 0"
)
CPU_ARGS = (
    "--quantization none --device cpu --batch-size 2 --grad-accum 1 --max-length 1024 "
    "--max-steps 4 --warmup-ratio 0"
)


def build_base(shape: str, folder: Path, device: str | None = None) -> Path:
    """A randomly initialised Llama of `shape`, saved with the default tokenizer. `device`
    (e.g. cuda) initialises the weights there, in bf16: an 8B shape in seconds, not minutes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.modeling import load_tokenizer
    from core.models import resolve_base_model

    tokenizer = load_tokenizer(resolve_base_model(None))
    values = dict(SHAPES[shape])
    values["vocab_size"] = max(values["vocab_size"], len(tokenizer))
    config = LlamaConfig(
        **values,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16" if shape != "tiny" else "float32",
    )
    torch.manual_seed(0)
    if device and shape != "tiny":
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    else:
        model = LlamaForCausalLM(config)
    if shape != "tiny":
        model = model.to(torch.bfloat16)  # half the disk; training loads it in its own dtype
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_one(n: int, base: Path, args, work: Path) -> dict:
    from finetune.distributed import launch_argv

    output = work / f"run-{n}"
    train_args = ["--base-model", str(base), "--data", str(args.data), "--output-dir", str(output)]
    train_args += ["--eval-ratio", "0", "--no-progress", "--save-steps", "1000000"]
    train_args += shlex.split(args.train_args)
    argv = launch_argv(n, train_args)
    print(f"--- {n} process(es): {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    wall = time.monotonic() - started
    info_file = output / "final_model" / "training_info.json"
    if done.returncode != 0 or not info_file.is_file():
        tail = (done.stderr or done.stdout)[-3000:]
        print(tail, file=sys.stderr)
        last = tail.strip().splitlines()[-1] if tail.strip() else "failed"
        return {"num_processes": n, "error": last}
    info = json.loads(info_file.read_text())
    throughput = info["throughput"]
    return {
        "num_processes": n,
        "world_size": info.get("world_size"),
        "global_batch_size": info.get("global_batch_size"),
        "steps": info["global_step"],
        "tokens": throughput["train_tokens"],
        "train_runtime_s": throughput["train_runtime_s"],
        "tokens_per_s": throughput["tokens_per_s"],
        "peak_memory_gib": throughput["peak_memory_gib"],
        "train_loss": info["train_loss"],
        "quantization": info["quantization"],
        "precision": info["precision"],
        "device": info["device"],
        "wall_s": round(wall, 1),
        "argv": shlex.join(argv[argv.index("train") + 1 :]),
    }


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def run_all(args) -> dict:
    import torch

    from finetune.distributed import visible_gpus

    gpus = visible_gpus()
    device = args.device or ("cuda" if gpus else "cpu")
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    results = []
    try:
        base = build_base(args.shape, work / f"base-{args.shape}")
        for n in args.num_processes:
            if device.startswith("cuda") and n > gpus:
                print(f"--- {n} process(es): skipped, {gpus} GPU(s) visible", flush=True)
                results.append({"num_processes": n, "skipped": f"{gpus} GPU(s) visible"})
                continue
            result = run_one(n, base, args, work)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if args.keep_work:
            print(f"kept {work} (the base and the runs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    single = next(
        (r for r in results if r.get("num_processes") == 1 and r.get("tokens_per_s")), None
    )
    for r in results:
        if single and r.get("tokens_per_s"):
            r["speedup"] = round(r["tokens_per_s"] / single["tokens_per_s"], 3)
            r["efficiency"] = round(r["speedup"] / r["num_processes"], 3)
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_name(device),
        "visible_gpus": gpus,
        "shape": args.shape,
        "model_config": SHAPES[args.shape],
        "data": str(args.data),
        "train_args": args.train_args,
        "torch": torch.__version__,
        "nccl_env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")},
        "results": results,
    }


def to_markdown(report: dict) -> str:
    lines = [
        f"# Data-parallel training throughput ({report['device']}, {report['shape']} shape)",
        "",
        f"`finetune train` through `finetune.distributed.launch_argv`; data `{report['data']}`; "
        f"flags `{report['train_args']}`; torch {report['torch']}; {report['timestamp']}. "
        "Per-device batch fixed (weak scaling).",
        "",
        "| processes | global batch | steps | tokens | s | tokens/s | speed-up | efficiency "
        "| peak mem (rank 0) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        n = r["num_processes"]
        if "skipped" in r or "error" in r:
            lines.append(f"| {n} | {r.get('skipped') or r.get('error', '')[:120]} |" + " |" * 7)
            continue
        memory = f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "—"
        speedup = f"{r['speedup']:.2f}×" if "speedup" in r else "—"
        efficiency = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else "—"
        lines.append(
            f"| {n} | {r['global_batch_size']} | {r['steps']} | {r['tokens']:,} | "
            f"{r['train_runtime_s']:.1f} | {r['tokens_per_s']:,.0f} | {speedup} | {efficiency} "
            f"| {memory} |"
        )
    lines += [
        "",
        "tokens = real (non-pad) tokens trained over all ranks; s = the trainer's train_runtime; "
        "speed-up = tokens/s over the 1-process run's; efficiency = speed-up / processes. "
        "Goals: >= 1.8x at 2 GPUs, >= 3.4x at 4.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.train_scaling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--num-processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", help="cuda | cpu (default: cuda when a GPU is visible)")
    parser.add_argument(
        "--train-args",
        help=f"flags of `finetune train` (default on CUDA: {GPU_ARGS!r}; on the CPU: {CPU_ARGS!r})",
    )
    parser.add_argument("--out", type=Path, help="results stem (default: bench/results/...)")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the temporary base model and run folders"
    )
    args = parser.parse_args(argv)
    if args.train_args is None:
        import torch

        on_gpu = (args.device or "cuda").startswith("cuda") and torch.cuda.is_available()
        args.train_args = GPU_ARGS if on_gpu else CPU_ARGS
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # unset only: nothing overridden
    report = run_all(args)
    stem = args.out or RESULTS / (
        "train-scaling-"
        + report["device"].lower().replace("nvidia ", "").replace(" ", "-")
        + ("" if report["shape"] == "llama-3.2-1b" else f"-{report['shape']}")
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2))
    Path(f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
