"""`TrainConfig`: everything one training run needs, as a plain dataclass.

Values left at None come from the preset (epochs, learning rate, batch size, gradient
accumulation, gradient checkpointing) or from the settings (base model, quantization, device).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.data import DEFAULT_SYSTEM_PROMPTS, Example
from finetune.presets import DEFAULT_PRESET, Preset, get_preset

ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]

# Names the API (and Hugging Face's TrainingArguments) use for the same fields.
_ALIASES = {
    "conversations": "data",
    "examples": "data",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "lr": "learning_rate",
    "base_model_name": "base_model",
    "model_name": "base_model",
    "neftune_noise_alpha": "neftune_alpha",
}


@dataclass
class TrainConfig:
    # Data: a file path, or in-memory examples (Example objects or dicts such as {"prompt", "response"}).
    data: str | Path | list[Example] | list[dict[str, Any]] | None = None
    preset: str = DEFAULT_PRESET
    categories: list[str] | None = None
    difficulties: list[str] | None = None
    eval_ratio: float = 0.1
    seed: int = 42
    strict: bool = False
    max_length: int = 1024
    packing: bool = False  # TRL best-fit-decreasing packing into max_length rows, padding-free
    system_prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SYSTEM_PROMPTS))

    # Preset overrides (None: the preset's value)
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    gradient_checkpointing: bool | None = None
    max_steps: int | None = None  # stops early; a cap for quick runs and tests

    # Model (None: the settings)
    base_model: str | None = None
    quantization: str | None = None  # auto | 4bit | 8bit | none
    device: str | None = None

    # LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
    fp32_upcast: bool = False  # PEFT's prepare_model_for_kbit_training: norms/embeddings to fp32

    # Training behaviour
    neftune_alpha: float | None = None
    early_stopping_patience: int | None = None
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    logging_steps: int | None = None  # None: about 50 log points per run
    eval_steps: int | None = None  # None: evaluate (and checkpoint) once per epoch
    save_steps: int | None = None  # None: same as eval_steps
    resume: str | None = None  # a checkpoint folder, or "latest"

    # Output
    output_dir: str | Path | None = (
        None  # default: settings.checkpoints_path / <run_name or timestamp>
    )
    run_name: str | None = None
    keep_checkpoints: bool = False  # keep OUTPUT/checkpoint-* after a successful run
    progress_bar: bool = True

    def preset_values(self) -> Preset:
        return get_preset(self.preset)

    @property
    def resolved_epochs(self) -> float:
        return self.epochs if self.epochs is not None else self.preset_values().epochs

    @property
    def resolved_learning_rate(self) -> float:
        return (
            self.learning_rate
            if self.learning_rate is not None
            else self.preset_values().learning_rate
        )

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else self.preset_values().batch_size

    @property
    def resolved_gradient_accumulation_steps(self) -> int:
        if self.gradient_accumulation_steps is not None:
            return self.gradient_accumulation_steps
        return self.preset_values().gradient_accumulation_steps

    @property
    def resolved_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return self.preset_values().gradient_checkpointing

    @property
    def resolved_target_modules(self) -> list[str] | str:
        targets = self.target_modules
        if isinstance(targets, str):
            return (
                "all-linear"
                if targets == "all-linear"
                else [t.strip() for t in targets.split(",") if t.strip()]
            )
        if list(targets) == ["all-linear"]:
            return "all-linear"
        return list(targets)

    def validate(self, require_data: bool = True) -> None:
        get_preset(self.preset)
        if require_data and self.data is None:
            raise ValueError(
                "No training data: set TrainConfig.data to a file path or a list of examples."
            )
        checks = [
            (self.resolved_epochs > 0, "epochs must be > 0"),
            (self.resolved_learning_rate > 0, "learning_rate must be > 0"),
            (self.resolved_batch_size >= 1, "batch_size must be >= 1"),
            (
                self.resolved_gradient_accumulation_steps >= 1,
                "gradient_accumulation_steps must be >= 1",
            ),
            (self.max_length >= 16, "max_length must be >= 16"),
            (0 <= self.eval_ratio < 1, "eval_ratio must be in [0, 1)"),
            (self.lora_r >= 1, "lora_r must be >= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict that may use the API's / Hugging Face's names (num_train_epochs, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = _ALIASES.get(key, key)
            if name not in names:
                raise ValueError(
                    f"Unknown training option {key!r}; known: {', '.join(sorted(names))}."
                )
            if value is not None:
                kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with in-memory data summarised."""
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "data" and not isinstance(value, str | Path | None):
                value = f"<{len(value)} in-memory examples>"
            elif isinstance(value, Path):
                value = str(value)
            values[f.name] = value
        values["resolved"] = {
            "epochs": self.resolved_epochs,
            "learning_rate": self.resolved_learning_rate,
            "batch_size": self.resolved_batch_size,
            "gradient_accumulation_steps": self.resolved_gradient_accumulation_steps,
            "gradient_checkpointing": self.resolved_gradient_checkpointing,
            "target_modules": self.resolved_target_modules,
        }
        return values
