"""The process-wide Assistant: lazy thread-safe loading, adapter discovery and hot swap, status."""

from __future__ import annotations

import threading

import pytest

from services.assistant import Assistant, get_assistant


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A checkpoints folder holding one real (random) LoRA adapter, as training leaves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.modeling import load_base_model

    root = tmp_path_factory.mktemp("checkpoints")
    fresh = load_base_model()
    torch.manual_seed(1)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(fresh.model, config).save_pretrained(root / "run1" / "final_model")
    (root / "run1" / "final_model" / "training_info.json").write_text('{"train_loss": 1.5}')
    return root


def test_assistant_lifecycle(checkpoints):
    from core.settings import get_settings

    assistant = Assistant(get_settings().model_copy(update={"checkpoints_dir": checkpoints}))
    assert not assistant.loaded and assistant.status()["loaded"] is False

    seen, threads = [], []
    for _ in range(3):
        threads.append(threading.Thread(target=lambda: seen.append(assistant.llm)))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(seen) == 3 and all(llm is seen[0] for llm in seen)  # loaded once
    assert (
        assistant.status()["loaded"] and assistant.status()["model_name"] == "SmolLM2-135M-Instruct"
    )

    adapters = assistant.available_adapters()
    # The checkpoints' runs, and the adapter shipped in data/adapters (read only).
    assert {a["name"] for a in adapters} == {"run1", "smollm2-fcc-rag"}
    adapters = [a for a in adapters if a["name"] == "run1"]
    assert adapters[0]["info"]["training"] == {"train_loss": 1.5}

    question = [{"role": "user", "content": "What is an antenna?"}]
    base_answer = assistant.llm.invoke(question, max_new_tokens=8).content
    status = assistant.use_adapter(adapters[0]["path"])
    assert status["adapter"] == "run1" and status["adapter_path"] == adapters[0]["path"]
    assert assistant.llm is seen[0]  # hot swap: the base stayed loaded
    assert assistant.llm.invoke(question, max_new_tokens=8).content != base_answer
    assert assistant.use_adapter(None)["adapter"] is None
    assert assistant.llm.invoke(question, max_new_tokens=8).content == base_answer

    assert assistant.rag(load_llm=False).llm is assistant.llm
    assistant.unload()
    assert not assistant.loaded
    assert assistant.rag(load_llm=False).llm is None  # retrieval-only chain, no load


def test_one_assistant_per_process():
    assert get_assistant() is get_assistant()
