"""Named hyperparameter presets; every value can be overridden in `TrainConfig` (and so on the
CLI, in a `--config` file or in an API training request).

A preset's value applies to an option the user left unset (None in `TrainConfig`); an option
given explicitly always wins.
"""

from __future__ import annotations

import dataclasses
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

    def summary(self) -> str:
        """One line for help texts: `fast: 2 epochs, lr 0.0002, batch 4 (a quick first adapter)`."""
        parts = [
            f"{self.epochs:g} epochs",
            f"lr {self.learning_rate:g}",
            f"batch {self.batch_size}",
        ]
        if self.gradient_accumulation_steps != 1:
            parts.append(f"grad accum {self.gradient_accumulation_steps}")
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        note = f" ({self.description})" if self.description else ""
        return f"{self.name}: {', '.join(parts)}{note}"


# The `TrainConfig` options a preset sets (same names there): everything but name and description.
PRESET_OPTIONS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Preset) if f.name not in ("name", "description")
)

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
