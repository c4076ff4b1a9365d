"""The chat model on the real default model: streaming, stop strings, adapters, concurrency,
the standard constructor arguments and the shared-base cache."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler

from chains.generation import GenerationWorker, StopText
from chains.llm import AdapterError, QLoRAChatModel, to_chat_dicts

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


# Built like a LangChain integration -------------------------------------------------------


def test_constructor_takes_the_standard_arguments():
    chat = QLoRAChatModel(
        max_tokens=6, temperature=0.0, top_p=0.9, stop=["\n"], timeout=30, max_retries=1
    )
    assert (chat.model_name, chat.device, chat.quantization) == (
        "SmolLM2-135M-Instruct",
        "cpu",
        "none",
    )
    assert chat.max_new_tokens == 6 and chat.active_adapter is None
    assert QLoRAChatModel(max_new_tokens=5).max_tokens == 5  # the older name still works

    reply = chat.invoke(QUESTION)
    assert 0 < reply.usage_metadata["output_tokens"] <= 6 and "\n" not in reply.content
    assert reply.response_metadata["model_name"] == "SmolLM2-135M-Instruct"
    assert chat.invoke(QUESTION, max_new_tokens=3).usage_metadata["output_tokens"] <= 3
    assert chat.invoke(QUESTION, max_tokens=2).usage_metadata["output_tokens"] <= 2
    assert chat._get_ls_params(stop=None)["ls_stop"] == ["\n"]

    with pytest.raises(ValueError, match="max_token"):
        QLoRAChatModel(max_token=3)  # a typo is an error, not ignored
    with pytest.raises(TypeError, match="model="):
        chat.invoke(QUESTION, model="another-model")
    with pytest.raises(TypeError, match="Unknown generation arguments"):
        chat.invoke(QUESTION, top_k=3)


def test_timeout_cuts_the_generation():
    slow = QLoRAChatModel(max_tokens=400, temperature=0.0, timeout=0.05)
    reply = slow.invoke(QUESTION)
    assert reply.response_metadata["finish_reason"] == "timeout"
    assert reply.usage_metadata["output_tokens"] < 400


def test_bare_chat_models_share_a_base_and_an_adapter_gets_its_own(random_adapter):
    bare = QLoRAChatModel(max_tokens=16, temperature=0.0)
    also_bare = QLoRAChatModel.load(max_new_tokens=16, temperature=0.0)
    assert bare._adapter_set.base is also_bare._adapter_set.base  # loaded once
    assert bare.info()["base_shared"]
    base_answer = bare.invoke(QUESTION).content

    # Attaching while others hold the base: a private copy, the shared one stays bare.
    tuned = QLoRAChatModel.load(adapter_path=random_adapter, max_new_tokens=16, temperature=0.0)
    assert tuned.active_adapter == "adapter0" and not tuned.info()["base_shared"]
    assert tuned._adapter_set.base is not bare._adapter_set.base
    assert tuned.invoke(QUESTION).content != base_answer
    assert bare.invoke(QUESTION).content == base_answer
    assert not any("lora" in n for n, _ in bare.model.named_modules())
    newcomer = QLoRAChatModel(max_tokens=16, temperature=0.0)
    assert newcomer._adapter_set.base is bare._adapter_set.base  # never the tuned one

    tuned.unload_adapter("adapter0")
    assert tuned.invoke(QUESTION).content == base_answer


def test_sole_holder_keeps_its_base_and_dropped_bases_are_freed(random_adapter):
    from chains.adapter_set import AdapterSet, BaseCache

    cache = BaseCache()  # a cache of its own: no other chat model holds these bases
    adapters = AdapterSet(cache=cache)
    base = adapters.base
    assert len(cache) == 1 and base.shared
    name = adapters.load(random_adapter)
    assert adapters.base is base and not base.shared and len(cache) == 0  # claimed in place
    other = AdapterSet(cache=cache)
    assert other.base is not base and other.base.shared  # a fresh load, never the private one
    adapters.unload(name)

    del adapters, other, base
    gc.collect()
    assert len(cache) == 0  # the cache holds bases weakly


def test_worker_thread_ends_with_its_worker():
    worker = GenerationWorker("test-worker")
    done = threading.Event()
    worker.submit(done.set)
    assert done.wait(10)
    thread = worker._thread
    del worker
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
