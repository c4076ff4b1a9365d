"""The CUDA path: 4-bit NF4 QLoRA training and 4-bit serving on a GPU. Skipped without CUDA
(CI has none); run on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_finetune_train import FACTS, SYSTEM_PROMPTS, first_and_last_losses, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def cuda_qlora_run(tmp_path_factory):
    from finetune.train import train

    tmp = tmp_path_factory.mktemp("cuda-qlora")
    return train(tiny_config(tmp, quantization="4bit", device="cuda", max_steps=12))


@pytest.fixture(scope="module")
def cuda_chat_model():
    from chains.llm import QLoRAChatModel

    return QLoRAChatModel.load(device="cuda", max_new_tokens=16, temperature=0.0)


def test_auto_quantization_is_4bit_nf4_on_cuda(cuda_chat_model):
    import bitsandbytes as bnb

    info = cuda_chat_model.info()
    assert info["quantization"] == "4bit"
    assert str(info["device"]).startswith("cuda")
    linear4 = [m for m in cuda_chat_model.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4, "no 4-bit linear layers in the served model"
    assert linear4[0].weight.quant_type == "nf4"


def test_cuda_4bit_qlora_training_lowers_the_loss_and_writes_the_adapter(cuda_qlora_run):
    first, last = first_and_last_losses(cuda_qlora_run)
    assert last < first * 0.8, (first, last)
    folder = cuda_qlora_run.final_model_path
    assert (folder / "adapter_model.safetensors").exists()
    info = json.loads((folder / "training_info.json").read_text())
    assert info["arguments"]["quantization"] == "4bit"


def test_cuda_4bit_model_serves_the_adapter_and_streams_what_it_generates(
    cuda_qlora_run, cuda_chat_model
):
    question = [("system", SYSTEM_PROMPTS["default"]), ("human", FACTS[0][0])]
    base_answer = cuda_chat_model.invoke(question).content
    streamed = "".join(chunk.content for chunk in cuda_chat_model.stream(question))
    assert streamed == base_answer
    name = cuda_chat_model.load_adapter(cuda_qlora_run.final_model_path, name="cuda_run")
    try:
        tuned_answer = cuda_chat_model.invoke(question).content
    finally:
        cuda_chat_model.set_adapter(None)
        cuda_chat_model.unload_adapter(name)
    assert tuned_answer != base_answer
    assert "FCC answer" in tuned_answer
    assert cuda_chat_model.invoke(question).content == base_answer


def test_cuda_4bit_batched_generations_run_as_one_batch(cuda_chat_model):
    """Batched decoding on the GPU in 4-bit: rows share a batch and each gets its own answer.
    Not asserted: identical text. In 4-bit on the H200 only 3 of these 6 texts matched their
    one-at-a-time text (bf16 rounding differs by batch shape; even one-at-a-time reruns
    matched 15/16, bench/results/batching-cuda-bf16.md), which is why batching is opt-in."""
    from chains.llm import QLoRAChatModel
    from tests.test_batching import PROMPTS, run_together

    batched = QLoRAChatModel(
        device="cuda", max_new_tokens=24, temperature=0.0, repetition_penalty=1.0, max_batch_size=8
    )
    results, _ = run_together(batched, [lambda p=p: batched.invoke(p) for p in PROMPTS])
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert batched._worker.stats()["largest_batch"] >= 3
    assert all(r.content.strip() for r in results)
    assert all(0 < r.usage_metadata["output_tokens"] <= 24 for r in results)
