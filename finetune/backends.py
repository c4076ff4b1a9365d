"""Training backends: which library builds the LoRA model for `finetune.train`.

* `trl`: transformers + PEFT (+ bitsandbytes for QLoRA), trained by TRL's SFTTrainer, with
  Liger's fused kernels when `liger_kernel` is installed. Runs everywhere: the CPU, one GPU,
  several GPUs under `accelerate launch`.
* `unsloth`: Unsloth's FastLanguageModel (its own attention, RoPE, RMSNorm, SwiGLU and LoRA
  kernels, fused 4-bit dequantisation and its offloaded gradient checkpointing), trained by the same
  TRL SFTTrainer (which Unsloth patches on import) with the same data, loss masking and
  arguments. One CUDA GPU; `unsloth` is an optional package (never imported on the CPU path).
* `auto` (the default): `unsloth` where it applies (a CUDA device, one process, the `unsloth`
  package installed, 4-bit or no quantization, no fp32 upcast, a model family Unsloth patches),
  else `trl`. bench/results/train-qlora-*.md measures the two on an H100.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ["auto", "unsloth", "trl"]
# Families whose attention/MLP Unsloth replaces with its own kernels (FastLanguageModel
# dispatches these; others load through its generic path, which buys little over TRL).
UNSLOTH_MODEL_TYPES = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "cohere",
    "granite",
    "falcon_h1",
}
# LoRA targets for "all-linear" under Unsloth (it needs module names; the LM head stays frozen).
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def model_type(path: str) -> str | None:
    """The `model_type` of a local model folder's config.json (None when unknown)."""
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def unsloth_blocker(
    device: str,
    world_size: int,
    quantization: str,
    fp32_upcast: bool,
    family: str | None,
    installed: bool | None = None,
) -> str | None:
    """Why Unsloth cannot train this run (None: it can)."""
    if not device.startswith("cuda"):
        return f"Unsloth trains on CUDA GPUs; the device is {device}"
    if world_size > 1:
        return f"{world_size} processes: Unsloth's path here is single-GPU (use --backend trl)"
    if not (unsloth_installed() if installed is None else installed):
        return "the unsloth package is not installed (pip install unsloth)"
    if quantization not in {"4bit", "none"}:
        return f"quantization {quantization}: Unsloth trains 4-bit or 16-bit bases"
    if fp32_upcast:
        return "--fp32-upcast is the PEFT k-bit recipe of the TRL path"
    if family is not None and family not in UNSLOTH_MODEL_TYPES:
        return f"model type {family!r} is not one of Unsloth's patched families"
    return None


def resolve_backend(
    requested: str,
    device: str,
    world_size: int,
    quantization: str,
    fp32_upcast: bool,
    family: str | None,
    installed: bool | None = None,
) -> str:
    """`trl` or `unsloth` for a run; `unsloth` asked for where it cannot run is a ValueError."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "trl":
        return "trl"
    blocker = unsloth_blocker(device, world_size, quantization, fp32_upcast, family, installed)
    if requested == "unsloth":
        if blocker:
            raise ValueError(f"--backend unsloth: {blocker}.")
        return "unsloth"
    if blocker:
        log.info("Backend trl (Unsloth not used: %s)", blocker)
        return "trl"
    return "unsloth"


def import_unsloth():
    """Import Unsloth (it patches transformers, PEFT and TRL on import; import it before `trl`'s
    trainers are bound). Its banner and statistics stay off."""
    import os

    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import unsloth  # noqa: F401  (patches on import)
    from unsloth import FastLanguageModel

    return FastLanguageModel


def unsloth_target_modules(targets: list[str] | str) -> list[str]:
    return list(ALL_LINEAR) if targets == "all-linear" else list(targets)


def preload(config) -> str | None:
    """Import Unsloth first, before anything imports transformers, when this run will train
    through it: its patches of transformers, PEFT and TRL then all apply (imported later, Unsloth
    warns and some are missed). Resolves the backend as `finetune.train` will, without
    transformers; returns the backend, or None when it cannot tell yet (then nothing is
    imported and `finetune.train` decides)."""
    import os
    import sys

    if config.backend == "trl" or "transformers" in sys.modules or not unsloth_installed():
        return None
    try:
        import torch

        from core.models import resolve_base_model
        from core.settings import get_settings

        settings = get_settings()
        device = config.device or settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return None
        quantization = config.quantization or settings.quantization
        if quantization == "auto":
            quantization = "4bit" if device.startswith("cuda") else "none"
        name = (
            config.base_model if config.base_model is not None else settings.local_base_model_path
        )
        family = model_type(resolve_base_model(name, settings))
        world_size = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
        backend = resolve_backend(
            config.backend, device, world_size, quantization, config.fp32_upcast, family
        )
    except Exception:  # finetune.train resolves again and reports what is wrong
        return None
    if backend == "unsloth":
        import_unsloth()
    return backend
