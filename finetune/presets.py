"""Named hyperparameter presets; every value can be overridden in `TrainConfig` or on the CLI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    epochs: float
    learning_rate: float
    batch_size: int
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    description: str = ""


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("fast", 2, 2e-4, 4, description="a quick first adapter"),
        Preset("balanced", 4, 1e-4, 2, description="the default"),
        Preset("quality", 6, 5e-5, 1, 4, description="slower, smaller steps"),
        Preset(
            "memory_efficient",
            3,
            1e-4,
            1,
            8,
            True,
            description="batch 1 with gradient accumulation and checkpointing, for small GPUs",
        ),
    )
}
DEFAULT_PRESET = "balanced"


def get_preset(name: str | None) -> Preset:
    name = (name or DEFAULT_PRESET).strip().lower().replace("-", "_")
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]
