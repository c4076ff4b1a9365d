"""`TrainConfig`: THE schema of a training run, every option once.

Each field carries its help text (and choices and bounds where they exist) in
`metadata`, as in TRL's `SFTConfig`. Everything else is derived from it:

* `python -m finetune train` / `fcc-rag train`: one flag per field (`finetune.cli`), plus
  `--config run.yaml` (a YAML or JSON file of field values; flags given explicitly override it);
* the REST API's `TrainRequest` (`api.schemas`, through `services.jobs`): the user-facing fields;
* `training_info.json`'s "arguments": `dataclasses.asdict` of the config (`to_dict`).

Values left at None come from the preset (`finetune.presets.PRESET_OPTIONS`: epochs, learning
rate, batch size, gradient accumulation, gradient checkpointing) or from the settings (base
model, quantization, device).

Metadata keys: `help` (every field), `choices`, the bounds `gt`/`ge`/`lt`/`le` (checked by
`validate()` and by the API schema), and for the command line only `flags` (option strings
instead of `--field-name`), `parse` (text -> value, for a value given as text) and `cli` (extra
`argparse.add_argument` keywords).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from finetune.backends import BACKENDS
from finetune.data import DEFAULT_SYSTEM_PROMPTS, Example
from finetune.presets import DEFAULT_PRESET, PRESET_OPTIONS, PRESETS, Preset, get_preset

ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]
# The same as core.modeling.QUANTIZATIONS (not imported here: that module loads torch).
QUANTIZATIONS = ["auto", "4bit", "8bit", "none"]
# transformers' schedulers that need no extra scheduler arguments.
LR_SCHEDULERS = [
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


def json_object_file(text: str) -> dict[str, str]:
    """`--system-prompts FILE`: a JSON object {category: system prompt, "default": ...}."""
    path = Path(text).expanduser()
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{path}: expected a JSON object of strings {{category: system prompt}}")
    return value


@dataclass
class TrainConfig:
    # Data ------------------------------------------------------------------------------------
    data: str | Path | list[Example] | list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "Training data (required): a CSV, JSONL or JSON file of question/answer pairs "
            "or chats; in Python also a list of examples (Example objects or dicts such as "
            "{prompt, response}).",
            "cli": {"metavar": "FILE"},
        },
    )
    preset: str = field(
        default=DEFAULT_PRESET,
        metadata={
            "help": "Hyperparameter preset; its values apply to the options left unset. "
            + "; ".join(preset.summary() for preset in PRESETS.values())
            + ".",
            "choices": list(PRESETS),
        },
    )
    categories: list[str] | None = field(
        default=None, metadata={"help": "Train on these categories only (default: all)."}
    )
    difficulties: list[str] | None = field(
        default=None, metadata={"help": "Train on these difficulties only (default: all)."}
    )
    eval_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Held-out share for the eval loss, stratified by category.",
            "ge": 0,
            "lt": 1,
        },
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of the split, the LoRA init and the data order."}
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Stop on any data issue instead of skipping the row."},
    )
    max_length: int = field(
        default=1024,
        metadata={
            "help": "Tokens per example (prompt + answer); longer ones lose their end.",
            "ge": 16,
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Pack examples into max_length rows without padding, TRL's best-fit-decreasing "
            "(documents stay separate); with sdpa attention prefer batch size 1 and a larger "
            "max length."
        },
    )
    system_prompts: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_SYSTEM_PROMPTS),
        metadata={
            "help": "System prompt per category, {category: prompt, 'default': ...}; on the command "
            "line a JSON file of it (default: the built-in FCC prompts).",
            "parse": json_object_file,
            "cli": {"metavar": "JSON_FILE"},
        },
    )

    # Preset overrides (None: the preset's value) ---------------------------------------------
    epochs: float | None = field(
        default=None, metadata={"help": "Training epochs (default: the preset's).", "gt": 0}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default: the preset's).", "gt": 0}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Batch size per device (default: the preset's).", "ge": 1}
    )
    gradient_accumulation_steps: int | None = field(
        default=None,
        metadata={
            "help": "Batches per optimizer step (default: the preset's).",
            "ge": 1,
            "flags": ["--grad-accum", "--gradient-accumulation-steps"],
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (default: the "
            "preset's)."
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many optimizer steps (overrides epochs; a cap for quick runs "
            "and tests).",
            "ge": 1,
        },
    )

    # Model (None: the settings) --------------------------------------------------------------
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Base model: a hub id or a folder (default: the settings' / bundled model)."
        },
    )
    quantization: str | None = field(
        default=None,
        metadata={
            "help": "Quantization of the base model; 4bit trains QLoRA (NF4, double quantization) "
            "(default: the settings'; auto: 4-bit NF4 on CUDA).",
            "choices": QUANTIZATIONS,
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "auto | cpu | cuda | cuda:N (default: the settings')."}
    )

    # LoRA ------------------------------------------------------------------------------------
    lora_r: int = field(default=8, metadata={"help": "LoRA rank.", "ge": 1})
    lora_alpha: int = field(
        default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r).", "ge": 1}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA layers.", "ge": 0, "lt": 1}
    )
    target_modules: list[str] | str = field(
        default_factory=lambda: list(ATTENTION_PROJECTIONS),
        metadata={"help": "Modules that get LoRA layers: module names, or all-linear."},
    )
    fp32_upcast: bool = field(
        default=False,
        metadata={
            "help": "Upcast norms and embeddings of a quantized base to fp32 (PEFT's "
            "prepare_model_for_kbit_training; slower, for fp16 GPUs)."
        },
    )

    backend: str = field(
        default="auto",
        metadata={
            "help": "Training backend. auto: Unsloth (FastLanguageModel, its fused kernels and "
            "checkpointing) on one CUDA GPU when the unsloth package is installed and supports the "
            "run (4-bit or no quantization, a Llama/Mistral/Qwen/Gemma-family model), else trl; "
            "trl: transformers + PEFT + bitsandbytes (Liger kernels when installed), on the CPU, "
            "one or several GPUs; unsloth: Unsloth or an error. Both train with TRL's "
            "SFTTrainer on the same data and loss.",
            "choices": BACKENDS,
        },
    )

    # Training behaviour ----------------------------------------------------------------------
    neftune_alpha: float | None = field(
        default=None, metadata={"help": "NEFTune embedding noise, e.g. 5 (default: off).", "ge": 0}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Evaluations without improvement before stopping (default: off).",
            "ge": 1,
        },
    )
    lr_scheduler: str = field(
        default="cosine",
        metadata={"help": "Learning-rate schedule.", "choices": LR_SCHEDULERS},
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata={"help": "Share of the steps that warm the learning rate up.", "ge": 0, "lt": 1},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay.", "ge": 0})
    logging_steps: int | None = field(
        default=None,
        metadata={
            "help": "Log the loss every N steps (default: about 50 log points per run).",
            "ge": 1,
        },
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Evaluate and checkpoint every N steps (default: every epoch).", "ge": 1},
    )
    save_steps: int | None = field(
        default=None,
        metadata={"help": "Checkpoint every N steps (default: with the evaluation).", "ge": 1},
    )
    resume: str | None = field(
        default=None,
        metadata={
            "help": "Resume from a checkpoint folder, a run folder, or latest (the flag alone: "
            "latest).",
            "cli": {"nargs": "?", "const": "latest", "metavar": "CHECKPOINT"},
        },
    )

    # Output ----------------------------------------------------------------------------------
    output_dir: str | Path | None = field(
        default=None,
        metadata={
            "help": "Run folder (default: <checkpoints>/<run name>, the run name defaulting to "
            "<timestamp>-<preset>)."
        },
    )
    run_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of the run folder under the checkpoints folder (default: <timestamp>-<preset>)."
        },
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep the OUTPUT/checkpoint-* folders after a successful run."},
    )
    progress_bar: bool = field(
        default=True,
        metadata={"help": "A progress bar; off: log lines instead.", "flags": ["--progress"]},
    )
    progress_file: str | None = field(
        default=None,
        metadata={
            "help": "Append progress to this file as JSON lines (step, total, loss, eta_s, "
            "epoch): how the API follows a training job it runs in a child process."
        },
    )
    memory_check: bool = field(
        default=True,
        metadata={
            "help": "Refuse to start when the memory estimate exceeds what the device has free."
        },
    )

    # Presets -------------------------------------------------------------------------------

    def preset_values(self) -> Preset:
        return get_preset(self.preset)

    def resolved(self, name: str) -> Any:
        """The option's value, or the preset's where it is unset (for `PRESET_OPTIONS`)."""
        value = getattr(self, name)
        if value is None and name in PRESET_OPTIONS:
            return getattr(self.preset_values(), name)
        return value

    @property
    def resolved_epochs(self) -> float:
        return self.resolved("epochs")

    @property
    def resolved_learning_rate(self) -> float:
        return self.resolved("learning_rate")

    @property
    def resolved_batch_size(self) -> int:
        return self.resolved("batch_size")

    @property
    def resolved_gradient_accumulation_steps(self) -> int:
        return self.resolved("gradient_accumulation_steps")

    @property
    def resolved_gradient_checkpointing(self) -> bool:
        return self.resolved("gradient_checkpointing")

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

    # Checks and conversions ----------------------------------------------------------------

    def validate(self, require_data: bool = True) -> None:
        """The choices and bounds of the fields' metadata, on the resolved values."""
        get_preset(self.preset)  # lenient: "memory-efficient" is memory_efficient
        if require_data and self.data is None:
            raise ValueError(
                "No training data: give a file (--data, or data: in a --config file) or a list "
                "of examples (TrainConfig.data)."
            )
        for option in train_options():
            value = self.resolved(option.name)
            if value is None or option.name == "preset":
                continue
            if option.choices and value not in option.choices:
                raise ValueError(
                    f"{option.name} must be one of {', '.join(option.choices)}, not {value!r}"
                )
            check_bounds(option, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from field values (the field names only); None means the field's default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown training option {unknown[0]!r}; known: {', '.join(sorted(names))}."
            )
        return cls(**{key: value for key, value in values.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        """Every field (`dataclasses.asdict`), JSON-ready: in-memory data summarised, paths as
        strings; plus the values the preset resolved."""
        data = self.data
        if data is not None and not isinstance(data, str | Path):
            data = f"<{len(data)} in-memory examples>"
        values = dataclasses.asdict(dataclasses.replace(self, data=data))
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        values["resolved"] = {name: self.resolved(name) for name in PRESET_OPTIONS}
        values["resolved"]["target_modules"] = self.resolved_target_modules
        return values


# The fields as the CLI and the API see them ------------------------------------------------

_BOUND_CHECKS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
_BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def check_bounds(option: Option, value: Any, label: str | None = None) -> None:
    """ValueError when `value` is outside the bounds in the option's metadata."""
    for key, bound in option.bounds.items():
        if not _BOUND_CHECKS[key](value, bound):
            raise ValueError(f"{label or option.name} must be {_BOUND_SYMBOLS[key]} {bound:g}")


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise ValueError(f"expected true or false, not {text!r}")


@dataclass(frozen=True)
class Option:
    """One TrainConfig field with its annotation resolved and its metadata unpacked."""

    field: dataclasses.Field
    annotation: Any  # the resolved type hint, e.g. float | None

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def help(self) -> str:
        return self.field.metadata["help"]

    @property
    def choices(self) -> list | None:
        return self.field.metadata.get("choices")

    @property
    def bounds(self) -> dict[str, float]:
        return {
            key: self.field.metadata[key] for key in _BOUND_CHECKS if key in self.field.metadata
        }

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.field.metadata)

    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def shape(self) -> tuple[type, bool, bool]:
        """(scalar type, is a list, also takes a plain string): `str | Path | None` is (str,
        False, True), `list[str] | str` (str, True, True), `float | None` (float, False, False)."""
        hint = self.annotation
        union = isinstance(hint, UnionType) or get_origin(hint) is Union
        args = [a for a in (get_args(hint) if union else (hint,)) if a is not type(None)]
        takes_text = str in args or Path in args
        for arg in args:
            if get_origin(arg) is list and get_args(arg) == (str,):
                return str, True, takes_text
        if takes_text:
            return str, False, True
        (only,) = args
        if get_origin(only) is list:
            return get_args(only)[0], True, False
        return get_origin(only) or only, False, False

    def from_text(self, text: str) -> Any:
        """One value from text (a command-line argument, or a string in a --config file)."""
        parse = self.field.metadata.get("parse")
        scalar = self.shape[0]
        if parse is not None:
            return parse(text)
        if scalar is bool:
            return _to_bool(text)
        return scalar(text)

    def coerce(self, value: Any) -> Any:
        """A --config file's value: strings converted as on the command line (PyYAML reads 2e-4
        as a string), a lone string for a list option as a one-item list; types checked."""
        scalar, is_list, takes_text = self.shape
        if value is None:
            return None
        if is_list:
            if isinstance(value, str) and not takes_text:
                value = [value]
            if isinstance(value, list):
                return [self.from_text(v) if isinstance(v, str) else v for v in value]
            if isinstance(value, str):
                return value
            raise ValueError(f"expected a list, not {value!r}")
        if isinstance(value, str) and scalar is not str:
            return self.from_text(value)
        if scalar is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, scalar) or (scalar in (int, float) and isinstance(value, bool)):
            raise ValueError(f"expected {scalar.__name__}, not {value!r}")
        return value


@functools.cache
def train_options() -> tuple[Option, ...]:
    hints = get_type_hints(TrainConfig)
    return tuple(Option(f, hints[f.name]) for f in dataclasses.fields(TrainConfig))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A `--config` file: a YAML (or .json) mapping of TrainConfig field names to values."""
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: expected a mapping of training options (name: value), "
            f"not a {type(values).__name__}"
        )
    options = {option.name: option for option in train_options()}
    unknown = sorted(str(key) for key in values if key not in options)
    if unknown:
        raise ValueError(
            f"{path}: unknown training option {unknown[0]!r}; known: {', '.join(options)}."
        )
    coerced = {}
    for key, value in values.items():
        try:
            coerced[key] = options[key].coerce(value)
        except ValueError as error:
            raise ValueError(f"{path}: {key}: {error}") from None
    return coerced
