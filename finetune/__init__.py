"""QLoRA fine-tuning: data loading, presets, training with TRL, adapters with their metadata."""
