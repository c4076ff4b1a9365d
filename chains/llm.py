"""The local chat model: a (quantized) Hugging Face causal LM as a LangChain chat model.

    chat = QLoRAChatModel()                                   # the default model, settings' defaults
    chat = QLoRAChatModel(model="path/or/hub-id", adapter="data/checkpoints/run/final_model",
                          quantization="4bit", device="cuda", max_tokens=128, temperature=0.0,
                          top_p=0.9, stop=["\\n\\nQuestion:"], timeout=30)
    chat.invoke("What does Part 15 cover?"); chat.stream(...); await chat.ainvoke(...)

Built like LangChain's own integrations: the standard parameters are fields, checked by
`langchain-tests`' standard suites (tests/test_langchain_standard.py). The pieces live
beside it: `chains.generation` runs `generate` on a worker thread and streams its text,
`chains.adapter_set` shares loaded bases between chat models and keeps each chat model's
LoRA adapters (hot-swapped on the loaded base, no reload). A base is shared only while
no adapter is attached to it; see `chains.adapter_set` for why and how.

One generation runs at a time per base (the worker holds the model's lock for the whole
`generate`), so concurrent callers wait their turn.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr

from chains.adapter_set import BASES, AdapterError, AdapterSet
from chains.generation import (
    GenerationJob,
    GenerationWorker,
    StopText,
    TokenStreamer,
    aiter_text,
    async_sink,
    iter_text,
)
from core.modeling import GREEDY
from core.settings import Quantization, get_settings

__all__ = [
    "BASES",
    "AdapterError",
    "GenerationWorker",
    "QLoRAChatModel",
    "StopText",
    "TokenStreamer",
    "to_chat_dicts",
]

log = logging.getLogger(__name__)

# What a call may override (`max_new_tokens` is the old name of `max_tokens`).
GENERATION_PARAMS = ("max_tokens", "temperature", "top_p", "repetition_penalty", "timeout")
_CALL_ALIASES = {"max_new_tokens": "max_tokens"}


# Messages -------------------------------------------------------------------------------

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def to_chat_dicts(messages: Sequence[BaseMessage | dict]) -> list[dict[str, str]]:
    """LangChain messages (or role/content dicts) as the dicts a chat template takes."""
    out = []
    for message in messages:
        if isinstance(message, dict):
            out.append({"role": message["role"], "content": str(message["content"])})
            continue
        role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
        if role is None:
            raise ValueError(f"Unsupported message type for a local chat model: {message.type!r}")
        out.append({"role": role, "content": message.text})
    return out


def _settings_default(name: str):
    return lambda: getattr(get_settings(), name)


# The chat model -------------------------------------------------------------------------


class QLoRAChatModel(BaseChatModel):
    """A local causal LM (4-bit NF4 on CUDA by default) with hot-swappable LoRA adapters.

    Constructing one loads the base (or takes it from `chains.adapter_set.BASES` when
    another chat model already loaded it with the same path, quantization and device) and
    attaches `adapter` if given. After construction `model_name`, `quantization` and
    `device` hold what was resolved ("SmolLM2-135M-Instruct", "none", "cpu").
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, extra="forbid")

    model_name: str | None = Field(
        default=None,
        alias="model",
        description="Base model: a local folder or a Hugging Face id; None: LOCAL_BASE_MODEL_PATH, "
        "else the bundled SmolLM2-135M-Instruct.",
    )
    adapter: str | Path | None = Field(
        default=None,
        description="A LoRA adapter folder to attach at once; None: none (LOCAL_ADAPTER_PATH is "
        "what services.Assistant passes here, not a default of the chat model).",
    )
    quantization: Quantization | None = Field(
        default=None, description="auto | 4bit | 8bit | none; None: the QUANTIZATION setting."
    )
    device: str | None = Field(
        default=None, description="auto | cpu | cuda | cuda:N; None: the DEVICE setting."
    )
    max_tokens: int = Field(
        default_factory=_settings_default("max_new_tokens"),
        ge=1,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens"),
        description="Most tokens to generate (also accepted as max_new_tokens).",
    )
    temperature: float = Field(default_factory=_settings_default("temperature"), ge=0.0)
    top_p: float = Field(default_factory=_settings_default("top_p"), gt=0.0, le=1.0)
    repetition_penalty: float = Field(
        default_factory=_settings_default("repetition_penalty"), gt=0.0
    )
    stop: list[str] | None = Field(
        default=None, description="Stop strings for every call (a call's own `stop` replaces them)."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Most seconds one generation may run (transformers' max_time); the text "
        "so far is returned with finish_reason 'timeout'.",
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Accepted for the standard interface; a local generation is not retried "
        "(its failures do not go away on a second try).",
    )
    max_batch_size: int = Field(
        default_factory=_settings_default("generation_batch_size"),
        ge=1,
        description="Most generations decoded together when several wait for the model "
        "(1: one at a time; GENERATION_BATCH_SIZE). Rows with repetition penalty 1.0 only.",
    )
    streaming: bool = False  # invoke() runs through the stream (tokens reach callbacks either way)

    _adapter_set: AdapterSet = PrivateAttr()
    _worker: GenerationWorker = PrivateAttr(
        default_factory=lambda: GenerationWorker("qlora-generate")
    )

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._adapter_set = AdapterSet(self.model_name, self.quantization, self.device)
        self._worker.max_batch = self.max_batch_size
        loaded = self._adapter_set.loaded
        self.model_name = loaded.name or Path(loaded.path).name
        self.quantization = loaded.quantization
        self.device = loaded.device
        if self.adapter:
            self.load_adapter(self.adapter)

    @classmethod
    def load(
        cls,
        base_model: str | None = None,
        adapter_path: str | Path | None = None,
        quantization: str | None = None,
        device: str | None = None,
        **gen_defaults: Any,
    ) -> QLoRAChatModel:
        """`QLoRAChatModel(model=base_model, adapter=adapter_path, ...)` under its older name."""
        return cls(
            model=base_model,
            adapter=adapter_path,
            quantization=quantization,
            device=device,
            **gen_defaults,
        )

    # What is loaded -----------------------------------------------------------------

    @property
    def max_new_tokens(self) -> int:
        """The older name of `max_tokens`."""
        return self.max_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        self.max_tokens = value

    @property
    def tokenizer(self) -> Any:
        return self._adapter_set.base.tokenizer

    @property
    def model(self) -> Any:
        """The transformers model `generate` runs on: the PeftModel while adapters are
        attached, else the base. (The `model=` argument is the base's name: `model_name`.)"""
        return self._adapter_set.model

    @property
    def context_window(self) -> int:
        config = self._adapter_set.base.model.config
        limit = getattr(config, "max_position_embeddings", None) or get_settings().context_window
        return min(get_settings().context_window, int(limit))

    @property
    def active_adapter(self) -> str | None:
        return self._adapter_set.active

    @property
    def adapters(self) -> dict[str, dict]:
        return {name: dict(info) for name, info in self._adapters.items()}

    @property
    def _adapters(self) -> dict[str, dict]:
        return self._adapter_set.adapters

    @property
    def _peft(self) -> Any:
        return self._adapter_set.peft

    def info(self) -> dict[str, Any]:
        loaded = self._adapter_set.loaded
        adapter = self._adapter_set.active_info
        return {
            "model": self.model_name,
            "model_path": loaded.path,
            "adapter": adapter["path"] if adapter else None,
            "adapter_name": self.active_adapter,
            "adapters": sorted(self._adapters),
            "device": loaded.device,
            "quantization": loaded.quantization,
            "dtype": loaded.dtype,
            "context_window": self.context_window,
            "base_shared": self._adapter_set.base.shared,
        }

    # Adapters -----------------------------------------------------------------------

    def load_adapter(self, path: str | Path, name: str | None = None, activate: bool = True) -> str:
        """Attach the LoRA adapter saved in `path` (reloading it if `name` is taken); return its name."""
        return self._adapter_set.load(path, name=name, activate=activate)

    def set_adapter(self, name: str | None) -> None:
        """Make a loaded adapter active, or None to run the bare base model."""
        self._adapter_set.set_active(name)

    def unload_adapter(self, name: str) -> None:
        """Remove a loaded adapter; the base model is untouched."""
        self._adapter_set.unload(name)

    # Tokens -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self._adapter_set.base.tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_message_tokens(self, messages: Sequence[BaseMessage | dict]) -> int:
        """Prompt tokens of these messages with the chat template and generation prompt."""
        return int(self._encode(messages)["input_ids"].shape[1])

    def continuation_logprob(
        self, prefixes: Sequence[str], continuation: str, max_prefix_tokens: int | None = None
    ) -> list[float]:
        """Mean log-probability per token of `continuation` after each prefix, one batched
        forward pass (plain text, no chat template), under the active adapter.

        A prefix longer than `max_prefix_tokens` keeps its first tokens. This is how the
        model scores passages for a question (`chains.rerank`); it waits for the model's
        lock like a generation does."""
        base = self._adapter_set.base
        with base.tokenizer_lock:
            tail = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            heads = [
                self.tokenizer(p, add_special_tokens=False)["input_ids"][:max_prefix_tokens]
                for p in prefixes
            ]
        if not tail or not heads:
            return [0.0] * len(heads)
        rows = [head + tail for head in heads]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: each row's positions start at 0
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with self._adapter_set.hold() as model, torch.inference_mode():
            device = next(model.parameters()).device
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for i, head in enumerate(heads):
            # Position t predicts token t + 1 (with no prefix the first token is not scored).
            first, end = max(len(head), 1), len(head) + len(tail)
            targets = ids[i, first:end].to(logprobs.device)
            picked = logprobs[i, first - 1 : end - 1].gather(-1, targets.unsqueeze(-1))
            scores.append(float(picked.mean()))
        return scores

    def get_num_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        return self.count_message_tokens(messages)

    def _encode(self, messages: Sequence[BaseMessage | dict]) -> dict[str, torch.Tensor]:
        base = self._adapter_set.base
        with base.tokenizer_lock:
            return base.tokenizer.apply_chat_template(
                to_chat_dicts(messages),
                chat_template=self._adapter_set.chat_template(),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )

    # Parameters ---------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "qlora-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "adapter": self.active_adapter,
            **self._call_params(),
        }

    def _call_params(self, **overrides: Any) -> dict[str, Any]:
        """This model's generation parameters with a call's overrides (None: keep the default)."""
        params = {name: getattr(self, name) for name in GENERATION_PARAMS}
        for alias, name in _CALL_ALIASES.items():
            value = overrides.pop(alias, None)
            if overrides.get(name) is None:
                overrides[name] = value
        if "model" in overrides:
            raise TypeError(
                "A local chat model serves the base it loaded: create another "
                "QLoRAChatModel(model=...) instead of passing model= per call."
            )
        unknown = set(overrides) - set(params)
        if unknown:
            raise TypeError(f"Unknown generation arguments: {', '.join(sorted(unknown))}")
        params.update({k: v for k, v in overrides.items() if v is not None})
        return params

    def generation_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The `model.generate` keyword arguments for these settings (temperature 0 = greedy)."""
        params = self._call_params(**overrides)
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(params["max_tokens"]),
            "repetition_penalty": float(params["repetition_penalty"]),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params["timeout"] is not None:
            kwargs["max_time"] = float(params["timeout"])
        if float(params["temperature"]) <= 0:
            kwargs.update(GREEDY)
        else:
            kwargs.update(
                do_sample=True,
                temperature=float(params["temperature"]),
                top_p=float(params["top_p"]),
            )
        return kwargs

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="huggingface",
            ls_model_name=model if isinstance(model, str) else self.model_name or "",
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens") or kwargs.get("max_new_tokens") or self.max_tokens
        if max_tokens:
            params["ls_max_tokens"] = max_tokens
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = stops
        return params

    # Generation ---------------------------------------------------------------------

    def _start(
        self,
        messages: Sequence[BaseMessage | dict],
        stop: list[str] | None,
        sink: Any,
        **overrides: Any,
    ) -> GenerationJob:
        """Queue `generate` on the worker thread (it waits for the model); text goes to `sink`."""
        inputs = self._encode(messages)
        kwargs = self.generation_kwargs(**overrides)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        room = self.context_window - prompt_tokens
        if room <= 0:
            raise ValueError(
                f"The prompt has {prompt_tokens} tokens and the context window is "
                f"{self.context_window}: shorten the input (or raise CONTEXT_WINDOW if the model allows)."
            )
        if kwargs["max_new_tokens"] > room:
            log.warning(
                "max_new_tokens %d does not fit after a %d-token prompt; generating at most %d.",
                kwargs["max_new_tokens"],
                prompt_tokens,
                room,
            )
            kwargs["max_new_tokens"] = room

        return self._worker.start(
            tokenizer=self.tokenizer,
            inputs=inputs,
            generate_kwargs=kwargs,
            stop=self.stop if stop is None else stop,
            sink=sink,
            hold=self._adapter_set.hold,
        )

    def _last_chunk(self, job: GenerationJob) -> ChatGenerationChunk:
        """The closing chunk: no text, the usage and why the generation ended."""
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=job.usage, chunk_position="last"),
            generation_info={
                "finish_reason": job.finish_reason,
                "model_name": self.model_name,
                "adapter": self.active_adapter,
                "first_token_s": job.first_token_s,
            },
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        items: queue.SimpleQueue = queue.SimpleQueue()
        job = self._start(messages, stop, items.put, **kwargs)
        try:
            with contextlib.closing(iter_text(job, items.get)) as texts:
                for text in texts:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            yield self._last_chunk(job)
        finally:
            job.stop()  # a caller that stopped reading ends the generation early

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        items, sink = async_sink()
        job = self._start(messages, stop, sink, **kwargs)
        try:
            async for text in aiter_text(job, items):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            yield self._last_chunk(job)
        finally:
            job.stop()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(
            self._stream(messages, stop=stop, run_manager=run_manager, **kwargs)
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(
            self._astream(messages, stop=stop, run_manager=run_manager, **kwargs)
        )
