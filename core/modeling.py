"""Loading a base causal LM (quantized or not) and its tokenizer; shared by training and serving."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.models import explain_load_failure, resolve_base_model
from core.settings import get_settings

log = logging.getLogger(__name__)

QUANTIZATIONS = ("auto", "4bit", "8bit", "none")

# Greedy decoding; the sampling knobs set to None so a model's generation_config cannot add them.
GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # what the user asked for ("" for the default)
    path: str  # what was loaded
    device: str
    quantization: str  # 4bit | 8bit | none
    dtype: str


def pick_device(device: str | None = None) -> str:
    device = device or get_settings().device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_quantization(quantization: str | None, device: str) -> str:
    quantization = quantization or get_settings().quantization
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {quantization!r}"
        )
    if quantization == "auto":
        return "4bit" if device.startswith("cuda") else "none"
    return quantization


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def native_bf16(device: str) -> bool:
    """Does this CUDA device compute in bf16 natively (Ampere, compute capability 8.0, and
    newer)? T4 and V100 only emulate it, slowly; torch's plain is_bf16_supported() says yes
    to emulation too."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    index = torch.device(device).index
    major, _ = torch.cuda.get_device_capability(index if index is not None else 0)
    return major >= 8


def compute_dtype(device: str, precision: str | None = None) -> torch.dtype:
    """The dtype models compute in: `precision` auto (the default) picks bf16 on Ampere and
    newer GPUs, fp16 on older ones (T4, V100) and fp32 on the CPU; bf16, fp16 or fp32 forces it."""
    precision = (precision or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return _DTYPES[precision]
    if device.startswith("cuda"):
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """bf16 | fp16 | fp32 for a dtype (training args and training_info.json use these)."""
    return next((name for name, value in _DTYPES.items() if value == dtype), str(dtype))


def bnb_config(
    quantization: str, device: str, dtype: torch.dtype | None = None
) -> BitsAndBytesConfig | None:
    """The bitsandbytes config; 4-bit NF4 computes in `dtype` (default: compute_dtype(device))."""
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or compute_dtype(device),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_tokenizer(path: str, token: str | None = None) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, token=token)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(
            f"The tokenizer of {path!r} has no chat template. Use an instruct/chat model, or "
            "an adapter folder saved by `python -m finetune train` (it carries the template)."
        )
    return tokenizer


def load_base_model(
    name_or_path: str | None = None,
    quantization: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> LoadedModel:
    """Load the base model for inference or training.

    4-bit NF4 (double quantization) is the default on CUDA. The compute dtype follows the
    hardware (`compute_dtype`: bf16 on Ampere and newer, fp16 on T4/V100, fp32 on the CPU)
    unless `precision` forces one. bitsandbytes also runs 4-bit and 8-bit on the CPU when asked.
    """
    settings = get_settings()
    name = name_or_path if name_or_path is not None else settings.local_base_model_path
    path = resolve_base_model(name, settings)
    device = pick_device(device)
    quantization = resolve_quantization(quantization, device)
    dtype = compute_dtype(device, precision)
    kwargs: dict = {"dtype": dtype, "token": settings.hf_token}
    quant_config = bnb_config(quantization, device, dtype)
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
        kwargs["device_map"] = (
            {"": device if device != "cuda" else 0} if device != "cpu" else {"": "cpu"}
        )
    try:
        tokenizer = load_tokenizer(path, token=settings.hf_token)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as error:
        raise explain_load_failure(name or path, error) from error
    if quant_config is None:
        model.to(device)
    model.eval()
    log.info("Loaded %s on %s (%s, %s)", path, device, quantization, dtype)
    return LoadedModel(
        model, tokenizer, name or "", path, device, quantization, str(dtype).removeprefix("torch.")
    )
