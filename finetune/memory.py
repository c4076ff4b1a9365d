"""A rough memory estimate, printed before training starts.

weights    the loaded model's parameters and buffers at their stored size (4-bit packed + quant
           constants for NF4), as they sit in memory now;
LoRA       trainable parameters, their gradients and AdamW's two moments (all in the adapter dtype);
activations per layer and token: ~34·h bytes at 16-bit (Korthikanti et al. 2022, no s² term since
           SDPA does not keep the attention matrix), scaled to 32-bit on CPU; with gradient
           checkpointing only each layer's input is kept (h per layer) plus one layer's worth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psutil
import torch

# What the estimate leaves free for what it does not count (the CUDA context, allocator
# fragmentation, the tokenizer and data): it is rough, so a run that needs more than this
# share of the free memory is refused rather than left to die mid-epoch.
USABLE_SHARE = 0.9


@dataclass
class MemoryEstimate:
    weights_bytes: int
    lora_params: int
    lora_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.lora_bytes
            + self.gradient_bytes
            + self.optimizer_bytes
            + self.activation_bytes
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}

    def format(self) -> str:
        rows = [
            ("weights (as loaded)", self.weights_bytes),
            (f"LoRA parameters ({self.lora_params:,})", self.lora_bytes),
            ("LoRA gradients", self.gradient_bytes),
            ("AdamW states", self.optimizer_bytes),
            ("activations (rough)", self.activation_bytes),
            ("total (rough)", self.total_bytes),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {human_bytes(size):>10}" for name, size in rows)


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _stored_bytes(tensor: torch.Tensor) -> int:
    size = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)  # bitsandbytes Params4bit
    if state is not None:
        for part in (
            getattr(state, "absmax", None),
            getattr(getattr(state, "state2", None), "absmax", None),
        ):
            if isinstance(part, torch.Tensor):
                size += part.numel() * part.element_size()
    return size


def estimate_memory(
    model: torch.nn.Module,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    activation_dtype: torch.dtype,
) -> MemoryEstimate:
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen_bytes = sum(_stored_bytes(p) for p in model.parameters() if not p.requires_grad)
    frozen_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    lora_params = sum(p.numel() for p in trainable)
    lora_bytes = sum(p.numel() * p.element_size() for p in trainable)
    config = model.config
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    scale = torch.finfo(activation_dtype).bits / 16
    tokens = batch_size * seq_len
    per_layer_full = 34 * hidden * scale * tokens
    if gradient_checkpointing:
        activations = layers * hidden * 2 * scale * tokens + per_layer_full
    else:
        activations = layers * per_layer_full
    return MemoryEstimate(
        weights_bytes=int(frozen_bytes),
        lora_params=int(lora_params),
        lora_bytes=int(lora_bytes),
        gradient_bytes=int(lora_bytes),
        optimizer_bytes=int(2 * lora_params * 4),
        activation_bytes=int(activations),
    )


class MemoryWouldNotFitError(RuntimeError):
    """The run's memory estimate is larger than what its device has free."""


def free_bytes(device: str) -> int:
    """Memory free now on `device`: the GPU's (torch.cuda.mem_get_info), else the host's."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        free, _total = torch.cuda.mem_get_info(
            torch.cuda.current_device() if index is None else index
        )
        return int(free)
    return int(psutil.virtual_memory().available)


def check_fits(estimate: MemoryEstimate, device: str, free: int | None = None) -> None:
    """Raise MemoryWouldNotFitError, saying what to change, when the run would not fit.

    The weights are already loaded when this runs, so only what training adds is compared
    with what is free.
    """
    free = free_bytes(device) if free is None else free
    needed = estimate.total_bytes - estimate.weights_bytes
    if needed <= free * USABLE_SHARE:
        return
    where = "GPU " + device if device.startswith("cuda") else "host memory"
    raise MemoryWouldNotFitError(
        f"Training would need about {human_bytes(needed)} beyond the loaded weights "
        f"(activations {human_bytes(estimate.activation_bytes)}), but {where} has "
        f"{human_bytes(free)} free. Lower batch_size or max_length, turn on "
        "gradient_checkpointing, or use quantization 4bit (--no-memory-check, or memory_check "
        "false in a training request, skips this check)."
    )
