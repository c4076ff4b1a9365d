"""Loading a trained adapter on its base model, and greedy generation for chat, test and merge."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finetune.modeling import GREEDY, LoadedModel, load_base_model, load_tokenizer

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_INFO = "training_info.json"


class AdapterNotFoundError(FileNotFoundError):
    """The folder holds no adapter; the message says what to give instead."""


def adapter_dir(path: str | Path) -> Path:
    """Accept the adapter folder itself or a run folder holding final_model/."""
    folder = Path(path).expanduser()
    if (folder / ADAPTER_CONFIG).is_file():
        return folder
    if (folder / "final_model" / ADAPTER_CONFIG).is_file():
        return folder / "final_model"
    raise AdapterNotFoundError(
        f"{folder} holds no {ADAPTER_CONFIG}. Give the final_model folder of a run "
        "(`python -m finetune train` prints it) or the run folder."
    )


def read_training_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / TRAINING_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def adapter_base_model(folder: Path) -> str | None:
    """The base the adapter was trained on, if it still exists here (else None: the settings' default)."""
    info = read_training_info(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    for candidate in (info.get("base_model_path"), config.get("base_model_name_or_path")):
        if candidate and Path(candidate).exists():
            return candidate
    name = info.get("base_model") or config.get("base_model_name_or_path")
    if name and not Path(name).is_absolute():
        return name  # a hub id or the default's name
    return None


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
    tokenizer = load_tokenizer(
        str(folder)
    )  # the adapter's copy, with the chat template it was trained with
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
