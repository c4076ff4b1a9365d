"""The chat model on the real default model: streaming, stop strings, adapters, concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler

from chains.llm import AdapterError, StopText, to_chat_dicts

QUESTION = "What does the FCC regulate?"


def raw_greedy(chat_model, prompt: str, max_new_tokens: int) -> str:
    """The reference: plain `model.generate` on the same prompt and settings, decoded at once."""
    inputs = chat_model._encode([{"role": "user", "content": prompt}])
    kwargs = chat_model.generation_kwargs(max_new_tokens=max_new_tokens)
    with torch.inference_mode():
        output = chat_model.model.generate(**inputs, **kwargs)
    return chat_model.tokenizer.decode(
        output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


def test_stream_invoke_and_raw_generate_agree(chat_model):
    counter = TokenCounter()
    message = chat_model.invoke(QUESTION, max_new_tokens=24, config={"callbacks": [counter]})
    streamed = [chunk.content for chunk in chat_model.stream(QUESTION, max_new_tokens=24)]

    assert message.content == raw_greedy(chat_model, QUESTION, 24)
    assert "".join(streamed) == message.content
    assert len([t for t in streamed if t]) > 10  # token by token, not one block
    assert "".join(counter.tokens) == message.content
    assert len(counter.tokens) > 10
    usage = message.usage_metadata
    assert usage["input_tokens"] == chat_model.count_message_tokens(
        [{"role": "user", "content": QUESTION}]
    )
    assert 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_astream_matches_invoke(chat_model):
    async def collect() -> str:
        return "".join([chunk.content async for chunk in chat_model.astream(QUESTION)])

    assert asyncio.run(collect()) == chat_model.invoke(QUESTION).content


def test_stop_sequence_cuts_output_and_generation(chat_model):
    full = chat_model.invoke(QUESTION)
    words = full.content.split()
    assert len(words) > 6
    stop_word = words[4]
    cut = chat_model.invoke(QUESTION, stop=[stop_word])

    assert cut.content == full.content[: full.content.index(stop_word)]
    assert stop_word not in cut.content
    assert cut.response_metadata["finish_reason"] == "stop"
    assert cut.usage_metadata["output_tokens"] < full.usage_metadata["output_tokens"]
    streamed = "".join(c.content for c in chat_model.stream(QUESTION, stop=[stop_word]))
    assert streamed == cut.content


def test_stop_text_holds_back_partial_matches():
    stop = StopText(["\n\nQuestion:"])
    out = stop.feed("Answer [1].\n") + stop.feed("\nQues") + stop.feed("tion: next")
    assert out == "Answer [1]."
    assert stop.hit
    assert stop.flush() == ""
    partial = StopText(["END"])
    assert partial.feed("the EN") == "the "
    assert partial.feed("D") == ""
    no_hit = StopText(["END"])
    assert no_hit.feed("the EN") == "the " and no_hit.flush() == "EN"


def test_concurrent_generations_do_not_mix(chat_model):
    prompts = [
        "Name a radio band.",
        "What is an antenna?",
        "Define frequency.",
        "What is a license?",
    ]
    expected = [chat_model.invoke(p, max_new_tokens=16).content for p in prompts]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            chunks = [c.content for c in chat_model.stream(prompts[i], max_new_tokens=16)]
            results[i] = "".join(chunks)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [results[i] for i in range(4)] == expected
    assert len(set(expected)) == 4


def test_chat_dicts_from_messages():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    dicts = to_chat_dicts([SystemMessage("s"), HumanMessage("q"), AIMessage("a")])
    assert dicts == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_info_and_context_window(chat_model):
    info = chat_model.info()
    assert info["device"] == "cpu" and info["quantization"] == "none"
    assert chat_model.context_window == 2048  # settings (2048) < the model's 8192 positions
    assert chat_model.count_tokens("FCC Part 15") > 0


# Adapters ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory):
    """A real LoRA adapter with random weights, made on a fresh copy of the base model."""
    from peft import LoraConfig, get_peft_model

    from core.modeling import load_base_model

    folder = tmp_path_factory.mktemp("adapter") / "final_model"
    fresh = load_base_model()
    torch.manual_seed(0)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(fresh.model, config).save_pretrained(folder)
    fresh.tokenizer.save_pretrained(folder)
    return folder


def test_adapter_swap_changes_output_and_back(chat_model, random_adapter):
    base_answer = chat_model.invoke(QUESTION, max_new_tokens=16).content
    name = chat_model.load_adapter(random_adapter)
    try:
        assert chat_model.active_adapter == name == "adapter0"  # parent of final_model/
        adapted = chat_model.invoke(QUESTION, max_new_tokens=16).content
        assert adapted != base_answer
        assert chat_model.info()["adapter"] == str(random_adapter.resolve())
        assert chat_model._adapters[name]["template_matches"] is True

        chat_model.set_adapter(None)
        assert chat_model.invoke(QUESTION, max_new_tokens=16).content == base_answer
        chat_model.set_adapter(name)
        assert chat_model.invoke(QUESTION, max_new_tokens=16).content == adapted

        again = chat_model.load_adapter(random_adapter, name="second", activate=False)
        assert chat_model.active_adapter == name and again == "second"
        chat_model.unload_adapter("second")
    finally:
        chat_model.unload_adapter(name)
    assert chat_model.active_adapter is None
    assert chat_model._peft is None
    assert not any("lora" in n for n, _ in chat_model.model.named_modules())
    assert chat_model.invoke(QUESTION, max_new_tokens=16).content == base_answer


def test_adapter_for_another_base_is_refused(chat_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=chat_model.tokenizer.vocab_size,
        )
    )
    folder = tmp_path / "wrong"
    get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(folder)
    before = chat_model.invoke(QUESTION, max_new_tokens=8).content

    with pytest.raises(AdapterError, match="does not fit"):
        chat_model.load_adapter(folder)
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        chat_model.load_adapter(tmp_path)
    assert chat_model._peft is None and chat_model.active_adapter is None
    assert chat_model.invoke(QUESTION, max_new_tokens=8).content == before


def test_adapter_template_mismatch_warns(chat_model, random_adapter, tmp_path):
    import shutil

    folder = tmp_path / "other-template"
    shutil.copytree(random_adapter, folder)
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with pytest.warns(UserWarning, match="different chat template"):
        name = chat_model.load_adapter(folder, activate=False)
    try:
        assert chat_model._adapters[name]["template_matches"] is False
        assert chat_model.active_adapter is None
    finally:
        chat_model.unload_adapter(name)


def test_4bit_base_swaps_adapters_exactly(random_adapter):
    """QLoRA proper: NF4 base (bitsandbytes on CPU here), LoRA on top, detached = base again."""
    from chains.llm import QLoRAChatModel

    qlora = QLoRAChatModel.load(quantization="4bit", max_new_tokens=8, temperature=0.0)
    assert qlora.info()["quantization"] == "4bit"
    base_answer = qlora.invoke(QUESTION).content
    name = qlora.load_adapter(random_adapter)
    adapted = qlora.invoke(QUESTION).content
    qlora.set_adapter(None)
    assert qlora.invoke(QUESTION).content == base_answer
    qlora.unload_adapter(name)
    assert qlora.invoke(QUESTION).content == base_answer
    assert adapted != base_answer
