"""The default model is base + the shipped QLoRA adapter (LOCAL_ADAPTER_PATH's default)."""

from __future__ import annotations

import json

import pytest

from core.adapters import read_training_info
from core.settings import PROJECT_ROOT, Settings

SHIPPED = PROJECT_ROOT / "data" / "adapters" / "smollm2-fcc-rag"

pytestmark = pytest.mark.slow


def test_the_shipped_adapter_is_the_default_and_complete():
    defaults = Settings(
        _env_file=None, local_adapter_path=Settings.model_fields["local_adapter_path"].default
    )
    assert defaults.local_adapter_path == str(SHIPPED)
    for name in ("adapter_config.json", "adapter_model.safetensors", "chat_template.jinja"):
        assert (SHIPPED / name).is_file(), name
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert config["r"] <= 16
    info = read_training_info(SHIPPED)
    assert info["prompt_format"] == "rag-evidence"
    sources = info["data_sources"]
    trained_on = [sources["train_jsonl"]["path"], *sources["corpus"]]
    assert not any("shared" in path for path in trained_on), "trained on held-out data"
    assert all(path.startswith("data/") for path in trained_on)


def test_the_assistant_serves_it_by_default(tmp_path):
    from services.assistant import Assistant

    settings = Settings(_env_file=None, checkpoints_dir=tmp_path, local_adapter_path=str(SHIPPED))
    assistant = Assistant(settings)
    try:
        status = assistant.load(adapter_path=settings.local_adapter_path)
        assert status["adapter"] == "smollm2-fcc-rag"
        assert status["adapter_path"] == str(SHIPPED.resolve())
    finally:
        assistant.unload()
