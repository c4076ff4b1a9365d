"""QLoRA training throughput: a plain transformers + PEFT + bitsandbytes loop vs our training path.

    python -m bench.train [--device cuda|cpu] [--tiny] [--steps 10] [--warmup 3]
                          [--batch-size 4] [--ours-batch-size 8] [--seq-len 2048]
                          [--lengths rag|qa|uniform|full] [--checkpointing full|half|none]
                          [--ours-upcast]
                          [--variants baseline,ours,ours-liger]

The same randomly initialised model, shaped like Llama-3.2-1B (hidden 2048, 16 layers, 32 heads,
8 KV heads, MLP 8192, vocab 128256, tied embeddings), is saved once and loaded in NF4 (double
quantization, bf16 compute) by every variant, each in its own process (clean peak memory), with
the same LoRA (r 8, alpha 16, dropout 0.05, q/k/v/o) and AdamW on the adapter:

  baseline    the loop everyone writes first: PEFT's prepare_model_for_kbit_training (embeddings,
              LM head and norms upcast to fp32), batches of --batch-size documents, each padded
              to --seq-len, attention mask, no gradient checkpointing, `model(..., labels=...)`
              (the full-vocabulary logits, upcast to fp32, plain cross-entropy).
  ours        what `finetune.train` runs (TRL's SFTTrainer setup): non-quantized weights left in
              bf16 (no fp32 upcast; --ours-upcast restores it), gradient checkpointing in effect
              (non-reentrant, use_cache off, model in train mode; asserted; --checkpointing half
              checkpoints every other layer), documents
              packed best-fit-decreasing into --seq-len rows without padding between them
              (position ids restart per document; transformers turns that into a block-diagonal
              causal mask, so documents do not see each other; checked before timing),
              --ours-batch-size rows a step (`finetune train --packing` packs the same way but
              TRL's padding-free collator joins a step's rows into one, which under sdpa costs
              more attention work when --batch-size > 1), and the fused LM head of TRL (log-probabilities of the labelled positions only, in
              vocabulary tiles, no full logits); the bench's own chunked cross-entropy stands in
              when trl cannot be imported (the output says which ran).
  ours-liger  the same with Liger's fused linear cross-entropy, RMSNorm, SwiGLU and RoPE kernels
              (only when `liger_kernel` imports).

Documents are random tokens with lengths drawn from --lengths: `rag` mirrors what
`finetune data from-corpus` produces (4 retrieved chunks + question + answer; measured p50 981,
p90 1138, max 1239 tokens), `qa` the plain question/answer CSV (p50 141), `uniform` 256..seq_len,
`full` every document --seq-len long (no padding anywhere: the pure compute comparison).

Measured after --warmup steps over --steps timed steps: tokens/s counts real (non-pad) tokens;
peak memory is torch.cuda.max_memory_allocated over the whole run; MFU = tokens/s x FLOPs/token /
989e12 (H100 SXM dense bf16), FLOPs/token = 6 x N_matmul + 6 x n_layers x d_model x s_eff, where
N_matmul counts every matmul weight (attention and MLP projections, and the LM head), 6 = forward
+ backward as for full training, and the second term is causal attention over documents of
token-weighted mean length s_eff. LoRA skips the frozen weights' gradient GEMMs, so the work
really done is about 4 x N (+ 2 x N recompute with checkpointing): MFU here is the conventional
model-FLOPs figure, not hardware utilisation.

Results: bench/results/train-<device>.json and .md. `--device cpu --tiny` is a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
PEAK_FLOPS = 989e12  # H100 SXM dense bf16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_1B = dict(
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=128256,
    tie_word_embeddings=True,
    max_position_embeddings=8192,
    rope_theta=500000.0,
)
TINY = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    vocab_size=2048,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
)
FLOPS_FORMULA = (
    "FLOPs/token = 6 * N_matmul + 6 * n_layers * d_model * s_eff "
    "(N_matmul: attention + MLP projections + LM head; s_eff: token-weighted mean document "
    "length, causal); MFU = tokens/s * FLOPs/token / 989e12"
)


# Model ---------------------------------------------------------------------------------------


def model_config(tiny: bool):
    from transformers import LlamaConfig

    return LlamaConfig(**(TINY if tiny else LLAMA_1B))


def matmul_params(config) -> int:
    d, kv = (
        config.hidden_size,
        config.num_key_value_heads * (config.hidden_size // config.num_attention_heads),
    )
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * config.intermediate_size
    return config.num_hidden_layers * per_layer + d * config.vocab_size


def save_random_model(folder: Path, tiny: bool, device: str) -> None:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(model_config(tiny)).to(dtype)
    model.save_pretrained(folder)
    del model


def load_qlora(folder: Path, device: str, checkpointing: str, attn: str, upcast: bool = True):
    """NF4 base + LoRA. `checkpointing`: full | half (every other layer) | none. `upcast`: PEFT's
    prepare_model_for_kbit_training (non-quantized weights, i.e. embeddings/LM head and norms, to
    fp32: what finetune.train does); without it they stay bf16."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    on_cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if on_cuda else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        quantization_config=quantization,
        dtype=dtype,
        device_map={"": 0 if on_cuda else "cpu"},
        attn_implementation=attn,
    )
    enabled = checkpointing != "none"
    if upcast:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=enabled,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        for parameter in model.parameters():
            parameter.requires_grad = False
        if enabled:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    if checkpointing == "half":
        for index, layer in enumerate(model.model.layers):
            layer.gradient_checkpointing = index % 2 == 0
    model.config.use_cache = False
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    if enabled:
        model.enable_input_require_grads()
    model.train()
    return model


def checkpointing_in_effect(model) -> bool:
    base = model.get_base_model()
    flags = [getattr(m, "gradient_checkpointing", False) for m in base.modules()]
    return base.training and any(flag is True for flag in flags)


# Data ----------------------------------------------------------------------------------------


def document_lengths(kind: str, count: int, seq_len: int, rng: random.Random) -> list[int]:
    def clip(n: float) -> int:
        return max(16, min(seq_len, int(n)))

    if kind == "rag":  # from-corpus examples: ~N(990, 130), within [600, 1240] on our data
        return [
            clip(min(1240, max(600, rng.gauss(990, 130))) * seq_len / 2048) for _ in range(count)
        ]
    if kind == "qa":  # plain Q/A rows: p50 141, p99 195
        return [clip(rng.gauss(145, 25) * seq_len / 2048) for _ in range(count)]
    if kind == "uniform":
        return [rng.randint(min(256, seq_len // 2), seq_len) for _ in range(count)]
    if kind == "full":
        return [seq_len] * count
    raise ValueError(f"unknown --lengths {kind!r}")


def make_documents(args, vocab: int, count: int) -> list[torch.Tensor]:
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    return [
        torch.randint(10, vocab, (n,), generator=generator)
        for n in document_lengths(args.lengths, count, args.seq_len, rng)
    ]


def padded_batches(documents: list[torch.Tensor], batch_size: int, seq_len: int, pad_id: int = 0):
    """The baseline: `batch_size` documents per step, each padded to seq_len."""
    for start in range(0, len(documents) - batch_size + 1, batch_size):
        docs = documents[start : start + batch_size]
        input_ids = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
        for row, doc in enumerate(docs):
            input_ids[row, : len(doc)] = doc
            mask[row, : len(doc)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": labels}, int(mask.sum())


def pack_rows(documents: list[torch.Tensor], seq_len: int) -> list[list[torch.Tensor]]:
    """Best-fit decreasing: each document goes to the open row with the least room that fits it."""
    rows: list[list[torch.Tensor]] = []
    room: list[int] = []
    for doc in sorted(documents, key=len, reverse=True):
        fits = [i for i, r in enumerate(room) if r >= len(doc)]
        if fits:
            best = min(fits, key=lambda i: room[i])
            rows[best].append(doc)
            room[best] -= len(doc)
        else:
            rows.append([doc])
            room.append(seq_len - len(doc))
    return rows


def packed_batches(
    documents: list[torch.Tensor], rows_per_step: int, seq_len: int, pad_id: int = 0
):
    """Ours: packed rows; position ids restart at each document, labels -100 on each document's first
    token (no prediction across documents) and on the padding tail of a row."""
    rows = pack_rows(documents, seq_len)
    random.Random(0).shuffle(rows)
    for start in range(0, len(rows) - rows_per_step + 1, rows_per_step):
        input_ids = torch.full((rows_per_step, seq_len), pad_id, dtype=torch.long)
        positions = torch.zeros((rows_per_step, seq_len), dtype=torch.long)
        labels = torch.full((rows_per_step, seq_len), -100, dtype=torch.long)
        real = 0
        for r, docs in enumerate(rows[start : start + rows_per_step]):
            offset = 0
            for doc in docs:
                n = len(doc)
                input_ids[r, offset : offset + n] = doc
                positions[r, offset : offset + n] = torch.arange(n)
                labels[r, offset + 1 : offset + n] = doc[1:]
                offset += n
            real += offset
            if offset < seq_len:  # the tail: its own "document" of padding, never scored
                positions[r, offset:] = torch.arange(seq_len - offset)
        yield {"input_ids": input_ids, "position_ids": positions, "labels": labels}, real


# Losses --------------------------------------------------------------------------------------


class ChunkedCrossEntropy(torch.autograd.Function):
    """Sum of token cross-entropies of hidden @ weight.T in token chunks, recomputed in backward:
    never the full [tokens, vocab] logits. Stands in for TRL's fused LM head when trl is absent."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int):
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        target_logit = torch.empty_like(lse)
        w = weight.to(hidden.dtype)
        for s in range(0, hidden.shape[0], chunk):
            logits = (hidden[s : s + chunk] @ w.t()).float()
            lse[s : s + chunk] = logits.logsumexp(-1)
            target_logit[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None])[:, 0]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk = chunk
        return (lse - target_logit).sum()

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, lse = ctx.saved_tensors
        w = weight.to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden)
        for s in range(0, hidden.shape[0], ctx.chunk):
            probs = (
                (hidden[s : s + ctx.chunk] @ w.t()).float() - lse[s : s + ctx.chunk, None]
            ).exp_()
            probs[torch.arange(probs.shape[0]), targets[s : s + ctx.chunk]] -= 1
            grad_hidden[s : s + ctx.chunk] = (probs.mul_(grad)).to(hidden.dtype) @ w
        return grad_hidden, None, None, None


def fused_head(model, kind: str):
    """A loss function `(model, batch) -> loss` for our path, and the name of what it uses."""
    base = model.get_base_model()
    if kind == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()

        def liger_loss(model, batch):
            hidden = base.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"]
            ).last_hidden_state
            labels = batch["labels"][:, 1:].reshape(-1)
            hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
            weight = base.lm_head.weight
            return liger(weight.to(hidden.dtype), hidden, labels)

        return liger_loss, "liger_kernel LigerFusedLinearCrossEntropyLoss"
    try:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(base, outputs=("log_probs",))

        def trl_loss(model, batch):
            return model(**batch, fused_lm_head=True).loss

        return trl_loss, "trl add_fused_lm_head (SFTTrainer's)"
    except ImportError as error:
        print(
            f"trl's fused LM head unavailable ({error}); using the bench's chunked cross-entropy",
            flush=True,
        )

    def chunked_loss(model, batch):
        hidden = base.model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"]
        ).last_hidden_state
        labels = batch["labels"][:, 1:].reshape(-1)
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        keep = labels != -100
        total = ChunkedCrossEntropy.apply(hidden[keep], base.lm_head.weight, labels[keep], 4096)
        return total / keep.sum().clamp(min=1)

    return chunked_loss, "bench ChunkedCrossEntropy (trl not importable)"


# One variant ---------------------------------------------------------------------------------


@torch.no_grad()
def packing_isolated(model, device: str, vocab: int) -> tuple[bool, float, float]:
    """Is a packed document blind to the one before it? The same document packed behind two different
    documents (two rows of one batch: same shapes, same kernels) must give the same hidden states.
    Returns (isolated, difference between the rows, the document's typical magnitude)."""
    base = model.get_base_model()
    generator = torch.Generator().manual_seed(1)
    first_a, first_b = (torch.randint(10, vocab, (48,), generator=generator) for _ in range(2))
    second = torch.randint(10, vocab, (32,), generator=generator)
    input_ids = torch.stack([torch.cat([first_a, second]), torch.cat([first_b, second])]).to(device)
    positions = torch.cat([torch.arange(48), torch.arange(32)]).expand(2, -1).to(device)
    was_training = model.training
    model.eval()
    try:
        hidden = base.model(
            input_ids=input_ids, position_ids=positions, use_cache=False
        ).last_hidden_state.float()
    finally:
        model.train(was_training)
    difference = (hidden[0, 48:] - hidden[1, 48:]).abs().max().item()
    scale = hidden[:, 48:].abs().mean().item()
    return difference <= 1e-3 * max(scale, 1e-6) + 1e-6, difference, scale


def run_variant(args) -> dict:
    device = args.device
    on_cuda = device.startswith("cuda")
    config = model_config(args.tiny)
    ours = args.variant != "baseline"
    checkpointing = args.checkpointing if ours else "none"
    if args.variant == "ours-liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(
            rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=False
        )
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    upcast = not ours or args.ours_upcast
    model = load_qlora(Path(args.model_dir), device, checkpointing, args.attn, upcast=upcast)
    assert checkpointing_in_effect(model) == (checkpointing != "none"), (
        "gradient checkpointing is not as asked"
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    steps = args.warmup + args.steps
    isolated, check = None, None
    if ours:
        isolated, difference, scale = packing_isolated(model, device, config.vocab_size)
        check = {"max_difference": difference, "magnitude": scale}
        assert isolated, (
            "packed documents attend to each other: the attention implementation ignores position_ids"
        )
        loss_fn, loss_impl = fused_head(model, "liger" if args.variant == "ours-liger" else "trl")
        need = steps * args.ours_batch_size * args.seq_len
        documents = make_documents(
            args, config.vocab_size, max(64, int(need / _mean_length(args) * 1.3) + 8)
        )
        batches = list(packed_batches(documents, args.ours_batch_size, args.seq_len))
        shape = [args.ours_batch_size, args.seq_len]
    else:
        loss_impl = "transformers model(labels=...) full logits + cross-entropy"
        documents = make_documents(args, config.vocab_size, steps * args.batch_size)
        batches = list(padded_batches(documents, args.batch_size, args.seq_len))
        shape = [args.batch_size, args.seq_len]

        def loss_fn(model, batch):
            return model(**batch).loss

    if len(batches) < steps:
        raise RuntimeError(f"only {len(batches)} batches for {steps} steps")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if on_cuda
        else torch.autocast("cpu", enabled=False)
    )
    times, losses, real_tokens = [], [], []
    for step, (batch, real) in enumerate(batches[:steps]):
        batch = {k: v.to(device) for k, v in batch.items()}
        if on_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast:
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
            real_tokens.append(real)
        losses.append(float(loss.detach()))
    total_time = sum(times)
    tokens_per_s = sum(real_tokens) / total_time
    s_eff = _token_weighted_length(documents)
    flops_per_token = (
        6 * matmul_params(config) + 6 * config.num_hidden_layers * config.hidden_size * s_eff
    )
    return {
        "variant": args.variant,
        "batch_shape": shape,
        "tokens_per_step_real": statistics.mean(real_tokens),
        "tokens_per_step_padded": shape[0] * shape[1],
        "padding_share": round(1 - statistics.mean(real_tokens) / (shape[0] * shape[1]), 4),
        "step_s_median": round(statistics.median(times), 4),
        "step_s": [round(t, 4) for t in times],
        "tokens_per_s": round(tokens_per_s, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if on_cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)
        if on_cuda
        else None,
        "mfu": round(tokens_per_s * flops_per_token / PEAK_FLOPS, 4) if on_cuda else None,
        "flops_per_token": int(flops_per_token),
        "s_eff": round(s_eff, 1),
        "gradient_checkpointing": checkpointing,
        "fp32_upcast": upcast,
        "packing_isolated": isolated,
        "packing_check": check,
        "loss_impl": loss_impl,
        "attn_implementation": args.attn,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }


def _mean_length(args) -> float:
    lengths = document_lengths(args.lengths, 256, args.seq_len, random.Random(args.seed))
    return statistics.mean(lengths)


def _token_weighted_length(documents) -> float:
    lengths = [len(d) for d in documents]
    return sum(n * n for n in lengths) / sum(lengths)


# Orchestration -------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for known in ("h200", "h100", "a100", "l40s", "a10g", "l4", "4090", "3090"):
            if known in name:
                return known
        return "cuda"
    return "cpu"


def available_variants(requested: list[str]) -> list[str]:
    variants = []
    for variant in requested:
        if variant == "ours-liger":
            try:
                import liger_kernel  # noqa: F401
            except ImportError:
                print("liger_kernel is not installed: skipping ours-liger", flush=True)
                continue
        variants.append(variant)
    return variants


def run_all(args) -> dict:
    variants = available_variants(args.variants.split(","))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        model_dir = Path(tmp) / "model"
        print(
            f"saving the random {'tiny' if args.tiny else 'Llama-3.2-1B-shaped'} model ...",
            flush=True,
        )
        save_random_model(model_dir, args.tiny, args.device)
        for variant in variants:
            out = Path(tmp) / f"{variant}.json"
            command = [
                sys.executable,
                "-m",
                "bench.train",
                "--variant",
                variant,
                "--model-dir",
                str(model_dir),
            ]
            command += ["--json-out", str(out), *args.passthrough]
            print(f"running {variant} ...", flush=True)
            proc = subprocess.run(
                command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
            )
            if out.exists():
                results.append(json.loads(out.read_text()))
            else:
                tail = (proc.stdout + proc.stderr)[-3000:]
                oom = "OutOfMemoryError" in tail or "out of memory" in tail
                results.append(
                    {
                        "variant": variant,
                        "error": "out of memory" if oom else "failed",
                        "log_tail": tail,
                    }
                )
            print(json.dumps({k: v for k, v in results[-1].items() if k != "log_tail"}), flush=True)
    return summarize(args, results)


def summarize(args, results: list[dict]) -> dict:
    import transformers

    by_name = {r["variant"]: r for r in results}
    baseline = by_name.get("baseline")
    comparisons = {}
    for r in results:
        if r is baseline or "error" in r or baseline is None or "error" in baseline:
            continue
        memory_ratio = (
            r["peak_memory_gib"] / baseline["peak_memory_gib"]
            if r["peak_memory_gib"] and baseline["peak_memory_gib"]
            else None
        )
        speedup = r["tokens_per_s"] / baseline["tokens_per_s"]
        comparisons[r["variant"]] = {
            "speedup_tokens_per_s": round(speedup, 3),
            "memory_ratio": round(memory_ratio, 3) if memory_ratio is not None else None,
            "goal_met": bool(speedup >= 2.0 and (memory_ratio is None or memory_ratio <= 1.0)),
        }
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("peft", "bitsandbytes", "trl", "liger-kernel"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "benchmark": "bench.train",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "model": "tiny Llama"
        if args.tiny
        else "random Llama-3.2-1B shape (NF4, double quant, bf16 compute)",
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "seq_len": args.seq_len,
            "baseline_batch": args.batch_size,
            "ours_batch_rows": args.ours_batch_size,
            "lengths": args.lengths,
            "checkpointing": args.checkpointing,
            "fp32_upcast_ours": args.ours_upcast,
            "attn": args.attn,
            "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": LORA_TARGETS},
        },
        "flops_formula": FLOPS_FORMULA,
        "versions": versions,
        "results": results,
        "vs_baseline": comparisons,
        "goal": "ours >= 2x baseline tokens/s at equal or lower peak memory",
    }


def to_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# QLoRA training throughput — {report['device']}",
        "",
        f"{report['timestamp']} · {report['model']} · seq {s['seq_len']} · document lengths `{s['lengths']}` · "
        f"{s['warmup']} warm-up + {s['steps']} timed steps · attention `{s['attn']}`",
        "",
        "| variant | batch | padding | tokens/s (real) | step s | peak mem GiB | MFU | checkpointing | fp32 upcast | loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | | | {r['error']} | | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        memory = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {r['batch_shape'][0]}×{r['batch_shape'][1]} | {r['padding_share']:.0%} | "
            f"{r['tokens_per_s']:,.0f} | {r['step_s_median']:.3f} | {memory} | {mfu} | "
            f"{r['gradient_checkpointing']} | {'yes' if r['fp32_upcast'] else 'no'} | {r['loss_impl']} |"
        )
    lines += [
        "",
        "| vs baseline | speedup (tokens/s) | memory ratio | goal (≥2×, ≤1×) |",
        "| --- | --- | --- | --- |",
    ]
    for name, c in report["vs_baseline"].items():
        ratio = f"{c['memory_ratio']:.2f}" if c["memory_ratio"] is not None else "-"
        lines.append(
            f"| {name} | {c['speedup_tokens_per_s']:.2f}× | {ratio} | {'met' if c['goal_met'] else 'NOT met'} |"
        )
    lines += ["", f"Formula: {report['flops_formula']}.", "", f"Versions: {report['versions']}"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny Llama (smoke test, e.g. on the CPU)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4, help="baseline documents per step")
    p.add_argument("--ours-batch-size", type=int, default=8, help="packed rows per step for ours")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--lengths", default="rag", choices=["rag", "qa", "uniform", "full"])
    p.add_argument(
        "--checkpointing", default="full", choices=["full", "half", "none"], help="for ours"
    )
    p.add_argument(
        "--ours-upcast",
        action="store_true",
        help="ours also upcasts norms and embeddings to fp32 (prepare_model_for_kbit_training)",
    )
    p.add_argument(
        "--attn", default="sdpa", help="attn_implementation (sdpa, eager, flash_attention_2, ...)"
    )
    p.add_argument("--variants", default="baseline,ours,ours-liger")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="results stem (default bench/results/train-<device>)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny and args.seq_len == 2048:
        args.seq_len = 256
    keep = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    keep += ["--batch-size", str(args.batch_size), "--ours-batch-size", str(args.ours_batch_size)]
    keep += [
        "--seq-len",
        str(args.seq_len),
        "--lengths",
        args.lengths,
        "--checkpointing",
        args.checkpointing,
    ]
    keep += ["--attn", args.attn, "--seed", str(args.seed)] + (["--tiny"] if args.tiny else [])
    keep += ["--ours-upcast"] if args.ours_upcast else []
    args.passthrough = keep
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variant:  # a child process: one variant
        try:
            result = run_variant(args)
        except torch.cuda.OutOfMemoryError:
            result = {"variant": args.variant, "error": "out of memory"}
        Path(args.json_out).write_text(json.dumps(result))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "CUDA is not available: run with --device cpu --tiny for a smoke test", file=sys.stderr
        )
        return 2
    report = run_all(args)
    stem = args.out or RESULTS / f"train-{device_name(args.device)}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2))
    Path(f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
