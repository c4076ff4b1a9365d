"""The adapter-folder contract, in one place: what a LoRA adapter folder holds, how one is
found and named, and which chat template it is prompted with.

A folder saved by `finetune train` (its `final_model/`) or by PEFT's `save_pretrained`:

    adapter_config.json          PEFT's config (base_model_name_or_path, r, target modules)
    adapter_model.safetensors    the LoRA weights
    chat_template.jinja          the template it was trained with (or in tokenizer_config.json)
    training_info.json           data hash and sources, base, quantization, every argument, losses

Template policy (training, `finetune test`, `finetune chat` and serving all use it): an
adapter is prompted with the chat template saved beside it, the one it was trained with;
a folder without one is prompted with the base tokenizer's template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_INFO = "training_info.json"
CHAT_TEMPLATE = "chat_template.jinja"
FINAL_MODEL = "final_model"  # the adapter folder inside a training run's output folder


class AdapterNotFoundError(FileNotFoundError):
    """The folder holds no adapter; the message says what to give instead."""


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_dir(path: str | Path) -> Path:
    """Accept the adapter folder itself or a run folder holding final_model/."""
    folder = Path(path).expanduser()
    if is_adapter_dir(folder):
        return folder
    if is_adapter_dir(folder / FINAL_MODEL):
        return folder / FINAL_MODEL
    raise AdapterNotFoundError(
        f"{folder} holds no {ADAPTER_CONFIG}. Give the final_model folder of a run "
        "(`fcc-rag train` prints it), the run folder, or a folder saved by PEFT's save_pretrained."
    )


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    return read_json(Path(folder) / ADAPTER_CONFIG) or {}


def read_training_info(folder: str | Path) -> dict[str, Any]:
    return read_json(Path(folder) / TRAINING_INFO) or {}


def adapter_name(folder: str | Path) -> str:
    """A run's name for its final_model folder (`run1/final_model` -> `run1`), else the folder's."""
    folder = Path(folder)
    raw = folder.parent.name if folder.name == FINAL_MODEL else folder.name
    return safe_adapter_name(raw)


def safe_adapter_name(raw: str) -> str:
    """PEFT adapter names become module attribute names: letters, digits, _ and - only."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", raw).strip("_") or "adapter"


def adapter_base_model(folder: Path) -> str | None:
    """The base the adapter was trained on, if it still exists here (else None: the settings' default)."""
    info = read_training_info(folder)
    config = read_adapter_config(folder)
    for candidate in (info.get("base_model_path"), config.get("base_model_name_or_path")):
        if candidate and Path(candidate).exists():
            return candidate
    name = info.get("base_model") or config.get("base_model_name_or_path")
    if name and not Path(name).is_absolute():
        return name  # a hub id or the default's name
    return None


def adapter_chat_template(folder: str | Path) -> str | None:
    """The chat template saved with the adapter (what it was trained with), if any."""
    folder = Path(folder)
    if (folder / CHAT_TEMPLATE).is_file():
        return (folder / CHAT_TEMPLATE).read_text()
    template = (read_json(folder / "tokenizer_config.json") or {}).get("chat_template")
    return template if isinstance(template, str) else None


def prompt_template(folder: str | Path | None, base_template: str | None) -> str | None:
    """THE template policy: the adapter's own template when it has one, else the base's."""
    if folder is None:
        return base_template
    return adapter_chat_template(folder) or base_template


def describe_adapter(folder: Path, root: Path | None = None) -> dict[str, Any]:
    """What the status, the chat's adapter list and the API show about one adapter folder."""
    config = read_adapter_config(folder)
    name = adapter_name(folder)
    if root is not None:
        relative = folder.relative_to(root)
        parent = relative.parent if folder.name == FINAL_MODEL and relative.parent.parts else None
        name = str(parent or relative)
    return {
        "path": str(folder),
        "name": name,
        "info": {
            "base_model": config.get("base_model_name_or_path"),
            "rank": config.get("r"),
            "training": read_json(folder / TRAINING_INFO),
            "modified": (folder / ADAPTER_CONFIG).stat().st_mtime,
        },
    }


def find_adapters(*roots: Path) -> list[dict[str, Any]]:
    """Every adapter folder under these roots (e.g. the checkpoints and the shipped adapters)."""
    found = []
    for root in roots:
        if root.is_dir():
            found += [
                describe_adapter(config_file.parent, root)
                for config_file in sorted(root.rglob(ADAPTER_CONFIG))
            ]
    return found
