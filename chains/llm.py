"""The local chat model: a (quantized) Hugging Face causal LM as a LangChain chat model.

LoRA adapters attach, swap and detach on the loaded base without reloading it, so a
running server can switch to a freshly trained adapter. Generation runs `model.generate`
in a worker thread and streams text token by token; one generation runs at a time per
model (the worker holds the model's lock for the whole `generate`), so concurrent callers
wait their turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from core.adapters import (
    ADAPTER_CONFIG,
    TRAINING_INFO,
    adapter_chat_template,
    adapter_name,
    prompt_template,
    read_json,
    safe_adapter_name,
)
from core.modeling import GREEDY, LoadedModel, load_base_model
from core.settings import get_settings

log = logging.getLogger(__name__)

_ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


class AdapterError(ValueError):
    """An adapter cannot be used with the loaded base model; the message says why and what to do."""


# Streaming pieces -----------------------------------------------------------------------


_END = object()


class TokenStreamer(BaseStreamer):
    """Hands decoded text to `sink` after every generated token.

    transformers' `TextIteratorStreamer` holds text back until a word is complete; this one
    decodes incrementally (a few tokens of left context, as text-generation-inference does)
    so the first token reaches the caller one token earlier, and holds back only an
    incomplete UTF-8 character. The prompt is skipped, special tokens are not shown.
    """

    def __init__(self, tokenizer: Any, sink: Callable[[Any], None]):
        self.tokenizer = tokenizer
        self.sink = sink
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.extend(value.reshape(-1).tolist())
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        text = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.sink(text[len(prefix) :])
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)

    def end(self) -> None:
        rest = self.tokenizer.decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        prefix = self.tokenizer.decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True
        )
        if len(rest) > len(prefix):
            self.sink(rest[len(prefix) :])
        self.sink(_END)


class StopText:
    """Cuts streamed text at the first stop string, holding back a possible partial match."""

    def __init__(self, stops: Sequence[str] | None):
        self.stops = [s for s in stops or () if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self.pending = self.pending[:cut], ""
            return out
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])),
            default=0,
        )
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


class _Interrupt(StoppingCriteria):
    """Stops `generate` when the caller went away or a stop string appeared in the new text."""

    def __init__(self, cancel: threading.Event, tokenizer: Any, stops: list[str], prompt_len: int):
        self.cancel = cancel
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        # A token decodes to at least one character (bar special tokens), so this many
        # trailing tokens always cover the longest stop string.
        self.window = max((len(s) for s in stops), default=0) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self.cancel.is_set()
        if not stop and self.stops:
            start = max(self.prompt_len, input_ids.shape[1] - self.window)
            tail = self.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
            stop = any(s in tail for s in self.stops)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


GENERATION_PARAMS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty")


class GenerationWorker:
    """The one long-lived thread that runs `generate` for a model, first come first served.

    Not a thread per call: CUDA libraries (cuBLAS, bitsandbytes) set up state per thread,
    and a fresh thread for every generation decoded 2.7x slower than the main thread on an
    H100 (bench/results/generation-cuda.md); a thread that lives on is as fast as the main one.
    """

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._jobs,), name=self.name, daemon=True
                )
                self._thread.start()
        self._jobs.put(work)

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:  # holds the queue only, never the model
        while True:
            jobs.get()()


@dataclass
class _Job:
    """One generation in flight: the worker thread and what it reports."""

    prompt_tokens: int
    max_new_tokens: int
    cancel: threading.Event
    streamer: TokenStreamer | None = None
    done: threading.Event = field(default_factory=threading.Event)
    output_tokens: int = 0
    started_at: float = field(default_factory=time.perf_counter)

    def stop(self) -> None:
        self.cancel.set()


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


def _text_of(content: Any) -> str:
    return content if isinstance(content, str) else str(content)


# The chat model -------------------------------------------------------------------------


class QLoRAChatModel(BaseChatModel):
    """A local causal LM (4-bit NF4 on CUDA by default) with hot-swappable LoRA adapters."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = ""
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    repetition_penalty: float = 1.1

    _loaded: LoadedModel = PrivateAttr()
    _base: Any = (
        PrivateAttr()
    )  # the transformers model (LoRA layers injected while adapters are loaded)
    _peft: Any = PrivateAttr(default=None)  # the PeftModel wrapper once an adapter is loaded
    _adapters: dict[str, dict] = PrivateAttr(default_factory=dict)  # name -> info
    _active: str | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _worker: Any = PrivateAttr(default_factory=lambda: GenerationWorker("qlora-generate"))
    _tokenizer_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # Loading ------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        base_model: str | None = None,
        adapter_path: str | Path | None = None,
        quantization: str | None = None,
        device: str | None = None,
        **gen_defaults: Any,
    ) -> QLoRAChatModel:
        """Load the base model (default: settings / the bundled model) and optionally an adapter."""
        settings = get_settings()
        defaults = {name: getattr(settings, name) for name in GENERATION_PARAMS}
        unknown = set(gen_defaults) - set(defaults)
        if unknown:
            raise TypeError(f"Unknown generation defaults: {', '.join(sorted(unknown))}")
        loaded = load_base_model(base_model, quantization=quantization, device=device)
        chat = cls(model_name=loaded.name or Path(loaded.path).name, **{**defaults, **gen_defaults})
        chat._loaded = loaded
        chat._base = loaded.model
        if loaded.quantization == "4bit" and loaded.device == "cpu":
            _keep_cpu_4bit_layout(loaded.model)
        if adapter_path:
            chat.load_adapter(adapter_path)
        return chat

    @property
    def tokenizer(self) -> Any:
        return self._loaded.tokenizer

    @property
    def model(self) -> Any:
        """What `generate` runs on: the PeftModel while adapters are loaded, else the base."""
        return self._peft if self._peft is not None else self._base

    @property
    def device(self) -> str:
        return self._loaded.device

    @property
    def context_window(self) -> int:
        config = self._base.config
        limit = getattr(config, "max_position_embeddings", None) or get_settings().context_window
        return min(get_settings().context_window, int(limit))

    @property
    def active_adapter(self) -> str | None:
        return self._active

    @property
    def adapters(self) -> dict[str, dict]:
        return {name: dict(info) for name, info in self._adapters.items()}

    def info(self) -> dict[str, Any]:
        adapter = self._adapters.get(self._active) if self._active else None
        return {
            "model": self.model_name,
            "model_path": self._loaded.path,
            "adapter": adapter["path"] if adapter else None,
            "adapter_name": self._active,
            "adapters": sorted(self._adapters),
            "device": self._loaded.device,
            "quantization": self._loaded.quantization,
            "dtype": self._loaded.dtype,
            "context_window": self.context_window,
        }

    # Adapters -----------------------------------------------------------------------

    def load_adapter(self, path: str | Path, name: str | None = None, activate: bool = True) -> str:
        """Attach the LoRA adapter saved in `path` (reloading it if `name` is taken); return its name."""
        folder = Path(path).expanduser().resolve()
        config_file = folder / ADAPTER_CONFIG
        if not config_file.is_file():
            raise AdapterError(
                f"{folder} holds no {ADAPTER_CONFIG}: point at an adapter folder saved by "
                "`python -m finetune train` (its `final_model/`) or by PEFT's save_pretrained."
            )
        config = json.loads(config_file.read_text())
        name = safe_adapter_name(name) if name else adapter_name(folder)
        self._check_adapter_base(folder, config)
        self._check_adapter_shapes(folder)
        template_matches = self._check_adapter_template(folder)
        with self._lock:
            if name in self._adapters:
                self._delete_adapter(name)
            self._attach(folder, name, config)
            self._adapters[name] = {
                "name": name,
                "path": str(folder),
                "base_model": config.get("base_model_name_or_path"),
                "rank": config.get("r"),
                "template_matches": template_matches,
                "training_info": read_json(folder / TRAINING_INFO),
            }
            if activate:
                self._activate(name)
            elif self._active is None:
                self._activate(None)
        log.info("Loaded adapter %r from %s", name, folder)
        return name

    def set_adapter(self, name: str | None) -> None:
        """Make a loaded adapter active, or None to run the bare base model."""
        if name is not None and name not in self._adapters:
            raise AdapterError(
                f"No adapter named {name!r} is loaded (loaded: {', '.join(self._adapters) or 'none'})."
            )
        with self._lock:
            self._activate(name)

    def unload_adapter(self, name: str) -> None:
        """Remove a loaded adapter; the base model is untouched."""
        if name not in self._adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded.")
        with self._lock:
            self._delete_adapter(name)

    def _attach(self, folder: Path, name: str, config: dict) -> None:
        from peft import PeftModel

        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._base, str(folder), adapter_name=name)
            else:
                self._peft.load_adapter(str(folder), adapter_name=name)
            self._peft.eval()
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            self._clean_failed_attach(name)
            raise AdapterError(
                f"Adapter {folder} does not fit the loaded base model {self._loaded.path} "
                f"(it was trained on {config.get('base_model_name_or_path') or 'an unrecorded base'}): "
                f"{error}"
            ) from error

    def _clean_failed_attach(self, name: str) -> None:
        if self._peft is not None and self._adapters:
            if name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            self._activate(self._active if self._active in self._adapters else None)
            return
        _strip_tuner_layers(self._base)
        self._peft = None

    def _activate(self, name: str | None) -> None:
        if name is not None:
            self._peft.set_adapter(name)
        self._active = name

    def _delete_adapter(self, name: str) -> None:
        del self._adapters[name]
        if not self._adapters:
            # The last one: take the LoRA layers out so the base runs exactly as loaded.
            self._base = self._peft.unload()
            self._base.__dict__.pop("peft_config", None)
            self._peft = None
            self._active = None
            return
        self._peft.delete_adapter(name)
        if self._active == name:
            self._active = None
        if self._active is not None:
            self._peft.set_adapter(self._active)

    def _adapter_context(self):
        """Run the bare base while no adapter is active (LoRA layers bypassed)."""
        if self._peft is not None and self._active is None:
            return self._peft.disable_adapter()
        return nullcontext()

    def _check_adapter_base(self, folder: Path, config: dict) -> None:
        recorded = config.get("base_model_name_or_path") or ""
        if not recorded:
            log.warning(
                "Adapter %s records no base model; it cannot be checked against the base.", folder
            )
            return
        recorded_dir = Path(recorded).expanduser()
        if (recorded_dir / "config.json").is_file():
            theirs = json.loads((recorded_dir / "config.json").read_text())
            ours = self._base.config
            differing = [
                k for k in _ARCHITECTURE_KEYS if k in theirs and theirs[k] != getattr(ours, k, None)
            ]
            if differing:
                raise AdapterError(
                    f"Adapter {folder} was trained on {recorded}, which differs from the loaded base "
                    f"{self._loaded.path} in {', '.join(differing)}. Load the adapter's base model "
                    "(LOCAL_BASE_MODEL_PATH) or pick an adapter trained on this one."
                )
            return
        names = {_model_stem(self._loaded.path), _model_stem(self._loaded.name)}
        if _model_stem(recorded) not in names:
            log.warning(
                "Adapter %s was trained on %r and the loaded base is %r; the names differ and %r is "
                "not on this machine, so only the weight shapes can be checked.",
                folder,
                recorded,
                self._loaded.path,
                recorded,
            )

    def _check_adapter_shapes(self, folder: Path) -> None:
        """Compare the LoRA matrices' shapes with the base model's layers before touching it."""
        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            return
        from safetensors import safe_open

        modules = dict(self._base.named_modules())
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                match = re.match(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight$", key)
                if not match:
                    continue
                module_name, which = match.groups()
                module = modules.get(module_name)
                if module is not None and hasattr(module, "get_base_layer"):
                    module = module.get_base_layer()
                shape = handle.get_slice(key).get_shape()
                expected_dim = getattr(
                    module, "in_features" if which == "A" else "out_features", None
                )
                actual_dim = shape[1] if which == "A" else shape[0]
                if module is None or (expected_dim is not None and expected_dim != actual_dim):
                    raise AdapterError(
                        f"Adapter {folder} does not fit the loaded base model {self._loaded.path}: "
                        f"{key} has shape {list(shape)}, the base has "
                        f"{'no layer ' + module_name if module is None else f'{expected_dim} features'}. "
                        "Load the base model the adapter was trained on."
                    )

    def _check_adapter_template(self, folder: Path) -> bool | None:
        """Warn when the adapter was trained with another chat template than the one in use."""
        template = adapter_chat_template(folder)
        if template is None:
            return None
        ours = self.tokenizer.chat_template or ""
        if template.strip() == ours.strip():
            return True
        message = (
            f"Adapter {folder} was trained with a different chat template than the base tokenizer's; "
            "it is prompted with its own template while active (core.adapters.prompt_template), "
            "so the base and the adapter see differently formatted prompts."
        )
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        return False

    # Tokens -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_message_tokens(self, messages: Sequence[BaseMessage | dict]) -> int:
        """Prompt tokens of these messages with the chat template and generation prompt."""
        return int(self._encode(messages)["input_ids"].shape[1])

    def get_num_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        return self.count_message_tokens(messages)

    def _chat_template(self) -> str | None:
        """The active adapter's own template, else the base's (one policy: core.adapters)."""
        adapter = self._adapters.get(self._active) if self._active else None
        return prompt_template(adapter["path"] if adapter else None, self.tokenizer.chat_template)

    def _encode(self, messages: Sequence[BaseMessage | dict]) -> dict[str, torch.Tensor]:
        with self._tokenizer_lock:
            return self.tokenizer.apply_chat_template(
                to_chat_dicts(messages),
                chat_template=self._chat_template(),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )

    # Generation ---------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "qlora-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "adapter": self._active, **self._generation_params()}

    def _generation_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GENERATION_PARAMS}

    def generation_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The `model.generate` keyword arguments for these settings (temperature 0 = greedy)."""
        params = self._generation_params()
        unknown = set(overrides) - set(params)
        if unknown:
            raise TypeError(f"Unknown generation arguments: {', '.join(sorted(unknown))}")
        params.update({k: v for k, v in overrides.items() if v is not None})
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(params["max_new_tokens"]),
            "repetition_penalty": float(params["repetition_penalty"]),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if float(params["temperature"]) <= 0:
            kwargs.update(GREEDY)
        else:
            kwargs.update(
                do_sample=True,
                temperature=float(params["temperature"]),
                top_p=float(params["top_p"]),
            )
        return kwargs

    def _start(
        self,
        messages: Sequence[BaseMessage | dict],
        stop: list[str] | None,
        sink: Callable[[Any], None],
        **overrides: Any,
    ) -> _Job:
        """Start `generate` in a worker thread that waits for the model's lock; text goes to `sink`."""
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
        job = _Job(prompt_tokens, kwargs["max_new_tokens"], threading.Event())
        job.streamer = TokenStreamer(self.tokenizer, sink)
        criteria = StoppingCriteriaList(
            [_Interrupt(job.cancel, self.tokenizer, list(stop or []), prompt_tokens)]
        )

        def work() -> None:
            try:
                with self._lock:
                    if job.cancel.is_set():
                        sink(_END)
                        return
                    model = self.model
                    device_inputs = {k: v.to(model.device) for k, v in inputs.items()}
                    with self._adapter_context(), torch.inference_mode():
                        output = model.generate(
                            **device_inputs,
                            **kwargs,
                            streamer=job.streamer,
                            stopping_criteria=criteria,
                        )
                    job.output_tokens = int(output.shape[1]) - prompt_tokens
            except BaseException as error:  # handed to the caller, raised in its thread
                sink(error)
            finally:
                job.done.set()

        self._worker.submit(work)
        return job

    def _finish_chunk(self, job: _Job, stop_text: StopText) -> ChatGenerationChunk:
        job.done.wait()
        finish = "stop" if stop_text.hit or job.output_tokens < job.max_new_tokens else "length"
        usage = {
            "input_tokens": job.prompt_tokens,
            "output_tokens": job.output_tokens,
            "total_tokens": job.prompt_tokens + job.output_tokens,
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=stop_text.flush(), usage_metadata=usage, chunk_position="last"
            ),
            generation_info={
                "finish_reason": finish,
                "model_name": self.model_name,
                "adapter": self._active,
                "first_token_s": (job.streamer.first_token_at - job.started_at)
                if job.streamer.first_token_at
                else None,
            },
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        items: queue.Queue = queue.Queue()
        job = self._start(messages, stop, items.put, **kwargs)
        stop_text = StopText(stop)
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                text = stop_text.feed(item)
                if stop_text.hit:
                    job.stop()
                if text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            final = self._finish_chunk(job, stop_text)
            if run_manager and final.text:
                run_manager.on_llm_new_token(final.text, chunk=final)
            yield final
        finally:
            job.stop()  # a caller that stopped reading ends the generation early

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        def sink(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        job = self._start(messages, stop, sink, **kwargs)
        stop_text = StopText(stop)
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                text = stop_text.feed(item)
                if stop_text.hit:
                    job.stop()
                if text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        await run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            final = await asyncio.to_thread(self._finish_chunk, job, stop_text)
            if run_manager and final.text:
                await run_manager.on_llm_new_token(final.text, chunk=final)
            yield final
        finally:
            job.stop()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = list(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
        final = chunks[-1]
        message = AIMessage(
            content="".join(_text_of(c.message.content) for c in chunks),
            usage_metadata=final.message.usage_metadata,
            response_metadata=dict(final.generation_info or {}),
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=final.generation_info)]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = [
            c async for c in self._astream(messages, stop=stop, run_manager=run_manager, **kwargs)
        ]
        final = chunks[-1]
        message = AIMessage(
            content="".join(_text_of(c.message.content) for c in chunks),
            usage_metadata=final.message.usage_metadata,
            response_metadata=dict(final.generation_info or {}),
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=final.generation_info)]
        )


# Helpers --------------------------------------------------------------------------------


def _model_stem(name_or_path: str | None) -> str:
    return Path(name_or_path or "").name.lower()


def _keep_cpu_4bit_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU bf16 kernel.

    It repacks on the first forward and unpacks in `state_dict()` (which PEFT calls when an
    adapter attaches); that round trip is lossy in bitsandbytes 0.50, so after attaching an
    adapter the bare base no longer gave its earlier answers. Without the repacking the
    4-bit weights stay as loaded and detaching an adapter restores the base exactly.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _strip_tuner_layers(model: torch.nn.Module) -> None:
    """Put back the base layers PEFT wrapped when an attach failed half-way."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
