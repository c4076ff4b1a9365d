"""Loading a trained adapter on its base model, and greedy generation for chat, test and merge."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.adapters import (  # noqa: F401 (AdapterNotFoundError, adapter_dir: finetune's API)
    AdapterNotFoundError,
    adapter_base_model,
    adapter_dir,
    prompt_template,
    read_training_info,
)
from core.modeling import GREEDY, LoadedModel, load_base_model

log = logging.getLogger(__name__)


@dataclass
class AdapterModel:
    model: Any  # PeftModel (or the bare base when no adapter was given)
    tokenizer: Any
    base: LoadedModel
    adapter_path: Path | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_adapter(self) -> bool:
        return self.adapter_path is not None


def load_adapter_model(
    adapter: str | Path | None,
    base_model: str | None = None,
    quantization: str | None = None,
    device: str | None = None,
) -> AdapterModel:
    from peft import PeftModel

    if adapter is None:
        base = load_base_model(base_model, quantization, device)
        return AdapterModel(base.model, base.tokenizer, base, None)
    folder = adapter_dir(adapter)
    base = load_base_model(base_model or adapter_base_model(folder), quantization, device)
    # One template policy with serving (core.adapters.prompt_template): the adapter's own.
    tokenizer = base.tokenizer
    tokenizer.chat_template = prompt_template(folder, tokenizer.chat_template)
    model = PeftModel.from_pretrained(base.model, str(folder))
    model.eval()
    return AdapterModel(model, tokenizer, base, folder, read_training_info(folder))


@torch.inference_mode()
def generate_ids(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy continuations (token ids, no special tokens trimmed) of chat prompts, batched with left padding."""
    outputs: list[list[int]] = []
    device = next(model.parameters()).device
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(conversations), batch_size):
            texts = [
                tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations[start : start + batch_size]
            ]
            batch = tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                **GREEDY,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            prompt_length = batch["input_ids"].shape[1]
            for row in generated[:, prompt_length:].tolist():
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                outputs.append(row)
    finally:
        tokenizer.padding_side = previous_side
    return outputs


def generate_texts(
    model, tokenizer, conversations, max_new_tokens: int = 128, batch_size: int = 8
) -> list[str]:
    ids = generate_ids(model, tokenizer, conversations, max_new_tokens, batch_size)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
