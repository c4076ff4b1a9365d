"""Training throughput of the path users run: `finetune.train` against TRL's SFTTrainer defaults.

    python -m bench.train --data data/adapters/smollm2-fcc-rag/data/train.jsonl
        [--variants ours-defaults,ours-user,ours-user-packing,trl-default,trl-default-qlora]
        [--epochs 1] [--max-steps N] [--user-args "--preset fast --batch-size 8 ..."]

Every variant trains on the same data file and the same base model (the settings' default,
SmolLM2-135M-Instruct unless LOCAL_BASE_MODEL_PATH says otherwise), each in its own process
(clean peak memory):

  ours-defaults      `finetune.train(TrainConfig(data=FILE))`: what `fcc-rag train --data FILE`
                     gives (preset balanced, QLoRA NF4 on CUDA, precision by hardware, Liger when
                     installed), for --epochs epochs;
  ours-user          the same with the options of the shipped adapter (--user-args, by default
                     the flags in data/adapters/smollm2-fcc-rag/reproduce.sh);
  ours-user-packing  ours-user with --packing;
  trl-default        `SFTTrainer(model=BASE, train_dataset=the file's chats, args=SFTConfig(
                     output_dir=...))`: TRL's default configuration (a full fine-tune, its own
                     batch size, precision, checkpointing and loss on every token);
  trl-default-qlora  the same with our LoRA (peft_config) on the base loaded in NF4.

Both sides count the same tokens: the real (non-pad) tokens of the rows trained, cut at the
max length in effect, times the epochs done; tokens/s divides them by the trainer's own
train_runtime (model loading and tokenisation excluded; evaluation is off, --eval-ratio 0).
Peak memory is torch.cuda.max_memory_allocated during training.

    MFU = tokens/s x (6 x N_matmul + 6 x n_layers x d_model x s_eff) / PEAK

N_matmul counts every matmul weight (attention and MLP projections and the LM head), s_eff is the
token-weighted mean row length (causal attention FLOPs), PEAK the datasheet dense bf16 rate
(989e12 for H100/H200 SXM). LoRA computes no gradients of the frozen weights, so it does about
4N, not 6N, per token: this is the conventional model-FLOPs utilisation, not hardware
utilisation. Results: bench/results/train-<device>.json and .md; `--device cpu --max-steps 2`
is a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
DEFAULT_DATA = ROOT / "data" / "adapters" / "smollm2-fcc-rag" / "data" / "train.jsonl"
# The flags the shipped adapter was trained with (data/adapters/smollm2-fcc-rag/reproduce.sh).
USER_ARGS = (
    "--preset fast --epochs 3 --batch-size 8 --lora-r 8 --lora-alpha 16 --target-modules all-linear "
    "--max-length 1024 --quantization 4bit"
)
VARIANTS = ["ours-defaults", "ours-user", "ours-user-packing", "trl-default", "trl-default-qlora"]


# Model shape -----------------------------------------------------------------------------


def matmul_params(config) -> int:
    """Weights of every matmul per token: q/k/v/o and the MLP in each layer, and the LM head."""
    d = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2
    mlp = 3 * d * config.intermediate_size
    return config.num_hidden_layers * (attention + mlp) + d * config.vocab_size


def flops_per_token(config, s_eff: float) -> float:
    return 6 * matmul_params(config) + 6 * config.num_hidden_layers * config.hidden_size * s_eff


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def peak_flops(name: str) -> float | None:
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


# Variants (each in its own process) ---------------------------------------------------------


def _row_lengths(lengths: list[int]) -> dict[str, float]:
    tokens = sum(lengths)
    return {
        "rows": len(lengths),
        "tokens_per_epoch": tokens,
        "s_eff": sum(n * n for n in lengths) / tokens if tokens else 0.0,
    }


def run_ours(args, extra: list[str]) -> dict:
    import torch

    from finetune.cli import build_parser, train_config
    from finetune.data import to_training_record, tokenize_record
    from finetune.train import prepare_data, train

    output = tempfile.mkdtemp(prefix="bench-ours-")
    argv = ["train", "--data", str(args.data), "--output-dir", output, "--eval-ratio", "0"]
    argv += ["--no-progress", *extra]
    if args.epochs:
        argv += ["--epochs", str(args.epochs)]
    if args.max_steps:
        argv += ["--max-steps", str(args.max_steps)]
    if args.device:
        argv += ["--device", args.device]
    config = train_config(build_parser().parse_args(argv))
    result = train(config)
    info = json.loads((result.final_model_path / "training_info.json").read_text())
    from core.modeling import load_tokenizer
    from core.models import resolve_base_model

    tokenizer = load_tokenizer(resolve_base_model(config.base_model))
    data = prepare_data(config)
    lengths = [
        min(len(tokenize_record(tokenizer, to_training_record(e))["input_ids"]), config.max_length)
        for e in data.train
    ]
    throughput = info["throughput"]
    return {
        "argv": " ".join(shlex.quote(a) for a in argv[1:]),
        "train_runtime_s": throughput["train_runtime_s"],
        "tokens": throughput["train_tokens"],
        "tokens_per_s": throughput["tokens_per_s"],
        "peak_memory_gib": throughput["peak_memory_gib"],
        "steps": info["global_step"],
        "epochs": info["epochs"],
        "train_loss": info["train_loss"],
        "batch_size": config.resolved_batch_size,
        "grad_accum": config.resolved_gradient_accumulation_steps,
        "checkpointing": config.resolved_gradient_checkpointing,
        "quantization": info["quantization"],
        "precision": info["precision"],
        "liger": info["liger"],
        "packing": info["packing"],
        "lora": f"r {config.lora_r}, alpha {config.lora_alpha}, {config.resolved_target_modules}",
        "torch": torch.__version__,
        **_row_lengths(lengths),
    }


_HIDDEN = ("output_dir", "model_init_kwargs")


def run_trl(args, qlora: bool) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from core.models import resolve_base_model
    from finetune.data import load_examples

    base = resolve_base_model(None)
    records = [{"messages": e.messages} for e in load_examples(args.data)]
    dataset = Dataset.from_list(records)
    output = tempfile.mkdtemp(prefix="bench-trl-")
    values: dict = {"output_dir": output, "report_to": "none", "save_strategy": "no"}
    if args.epochs:
        values["num_train_epochs"] = args.epochs
    if args.max_steps:
        values["max_steps"] = args.max_steps
    if args.device == "cpu":
        values["use_cpu"] = True
    kwargs: dict = {}
    if qlora:
        from peft import LoraConfig
        from transformers import BitsAndBytesConfig

        kwargs["peft_config"] = LoraConfig(  # the shipped adapter's LoRA (USER_ARGS)
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        values["model_init_kwargs"] = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if args.device != "cpu" else torch.float32,
            ),
            "dtype": torch.bfloat16 if args.device != "cpu" else torch.float32,
        }
    config = SFTConfig(**values)
    trainer = SFTTrainer(model=base, args=config, train_dataset=dataset, **kwargs)
    lengths = [
        min(len(ids), config.max_length or 10**9) for ids in trainer.train_dataset["input_ids"]
    ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    output_metrics = trainer.train().metrics
    runtime = output_metrics["train_runtime"]
    epochs = trainer.state.epoch or 0.0
    tokens = int(sum(lengths) * epochs)
    return {
        "argv": "SFTConfig("
        + ", ".join(f"{k}={v!r}" for k, v in values.items() if k not in _HIDDEN)
        + ")"
        + (" + peft_config=LoraConfig(r=8, alpha=16, all-linear), NF4 4-bit base" if qlora else ""),
        "train_runtime_s": round(runtime, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if torch.cuda.is_available()
        else None,
        "steps": trainer.state.global_step,
        "epochs": round(epochs, 4),
        "train_loss": output_metrics.get("train_loss"),
        "batch_size": config.per_device_train_batch_size,
        "grad_accum": config.gradient_accumulation_steps,
        "checkpointing": config.gradient_checkpointing,
        "quantization": "4bit" if qlora else "none",
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "liger": bool(config.use_liger_kernel),
        "packing": bool(config.packing),
        "lora": "r 8, alpha 16, all-linear" if qlora else "none (full fine-tune)",
        "loss_on": "completion only" if config.completion_only_loss else "every token",
        "max_length": config.max_length,
        "torch": torch.__version__,
        **_row_lengths(lengths),
    }


def run_variant(args) -> dict:
    name = args.variant
    if name == "ours-defaults":
        result = run_ours(args, [])
    elif name == "ours-user":
        result = run_ours(args, shlex.split(args.user_args))
    elif name == "ours-user-packing":
        result = run_ours(args, [*shlex.split(args.user_args), "--packing"])
    elif name == "trl-default":
        result = run_trl(args, qlora=False)
    elif name == "trl-default-qlora":
        result = run_trl(args, qlora=True)
    else:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return {"variant": name, **result}


# Driver -------------------------------------------------------------------------------------


def run_all(args) -> dict:
    import torch
    from transformers import AutoConfig

    from core.models import resolve_base_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = resolve_base_model(None)
    model_config = AutoConfig.from_pretrained(base)
    results = []
    for variant in args.variants:
        command = [
            sys.executable,
            "-m",
            "bench.train",
            "--variant",
            variant,
            "--data",
            str(args.data),
        ]
        command += ["--user-args", args.user_args, "--device", device]
        if args.epochs:
            command += ["--epochs", str(args.epochs)]
        if args.max_steps:
            command += ["--max-steps", str(args.max_steps)]
        print(f"--- {variant}", flush=True)
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
        if done.returncode != 0 or line is None:
            tail = (done.stderr or done.stdout)[-3000:]
            print(tail, file=sys.stderr)
            results.append(
                {
                    "variant": variant,
                    "error": tail.strip().splitlines()[-1] if tail.strip() else "failed",
                }
            )
            continue
        results.append(json.loads(line))
        print(line, flush=True)
    name = device_name(device)
    peak = peak_flops(name) if device.startswith("cuda") else None
    for result in results:
        if "error" in result:
            continue
        per_token = flops_per_token(model_config, result["s_eff"])
        result["flops_per_token"] = per_token
        result["mfu"] = result["tokens_per_s"] * per_token / peak if peak else None
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": name,
        "peak_flops": peak,
        "base_model": base,
        "n_matmul": matmul_params(model_config),
        "data": str(args.data),
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "results": results,
    }


def to_markdown(report: dict) -> str:
    rows = [r for r in report["results"] if "error" not in r]
    reference = next((r for r in rows if r["variant"] == "trl-default"), None)
    lines = [
        f"# Training throughput: `finetune.train` vs TRL SFTTrainer defaults ({report['device']})",
        "",
        f"Data `{report['data']}`, base `{Path(report['base_model']).name}` "
        f"(N_matmul = {report['n_matmul'] / 1e6:.1f} M), "
        + (f"{report['epochs']} epoch(s)" if report["epochs"] else "")
        + (f", at most {report['max_steps']} steps" if report["max_steps"] else "")
        + f"; {report['timestamp']}.",
        "",
        "| variant | quant | precision | batch | ckpt | Liger | packing | tokens | s | tokens/s "
        "| peak mem | MFU | vs TRL default |",
        "|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['tokens_per_s'] / reference['tokens_per_s']:.2f}×" if reference else "—"
        memory = f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "—"
        mfu = f"{100 * r['mfu']:.2f}%" if r.get("mfu") is not None else "—"
        lines.append(
            f"| {r['variant']} | {r['quantization']} | {r['precision']} | {r['batch_size']}"
            f"×{r['grad_accum']} | {'on' if r['checkpointing'] else 'off'} | "
            f"{'on' if r['liger'] else 'off'} | {'on' if r['packing'] else 'off'} | "
            f"{r['tokens']:,} | {r['train_runtime_s']:.1f} | {r['tokens_per_s']:,.0f} | {memory} "
            f"| {mfu} | {ratio} |"
        )
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['error'][:160]} |" + " |" * 11)
    lines += [
        "",
        "Commands / configurations:",
        "",
        *[f"- {r['variant']}: `{r.get('argv', '')}`" for r in rows],
        "",
        "tokens = real (non-pad) tokens of the trained rows (cut at the max length) × epochs "
        "done; s = the trainer's train_runtime (loading, tokenisation and evaluation excluded). "
        "MFU = tokens/s × (6·N_matmul + 6·layers·d_model·s_eff) / "
        + (f"{report['peak_flops']:.3g}" if report["peak_flops"] else "peak")
        + " (datasheet dense bf16); s_eff is the token-weighted mean row length. LoRA skips the "
        "frozen weights' gradient GEMMs, so MFU here is the conventional model-FLOPs figure. "
        "trl-default is a full fine-tune with loss on every token (TRL's defaults), not QLoRA: "
        "trl-default-qlora is the like-for-like baseline.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a subprocess
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    parser.add_argument("--user-args", default=USER_ARGS, help="the flags of ours-user")
    parser.add_argument(
        "--out", type=Path, help="results stem (default: bench/results/train-<gpu>)"
    )
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.variant:
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(run_variant(args)))
        return 0
    report = run_all(args)
    stem = args.out or RESULTS / (
        "train-" + report["device"].lower().replace("nvidia ", "").replace(" ", "-")
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2))
    Path(f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
