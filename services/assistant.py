"""The process-wide assistant that the CLI, the Chainlit app and the API all call.

    assistant = get_assistant()
    assistant.rag().invoke("...")          # loads the model on first use
    assistant.use_adapter("data/checkpoints/run/final_model")  # hot swap, base stays loaded

Loading is lazy and thread-safe: concurrent first requests load the model once.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.adapters import (
    adapter_name,
    describe_adapter,
    find_adapters,
    is_adapter_dir,
    read_training_info,
)
from core.models import ModelNotFoundError
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from chains.llm import QLoRAChatModel
    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from chains.summarize import Summarizer

log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model could not be loaded (a broken folder, a config transformers cannot read);
    the message says why. What was loaded before still serves."""


def _raised_inside(error: Exception) -> Exception:
    """The error a pydantic validator of the chat model raised (pydantic wraps it in a
    ValidationError), else the error itself."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        for detail in error.errors():
            inner = (detail.get("ctx") or {}).get("error")
            if isinstance(inner, Exception):
                return inner
    return error


class Assistant:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._llm: QLoRAChatModel | None = None
        self._lock = threading.RLock()
        self._loading = False
        self._last_error: str | None = None
        self._retrievers: dict[str, Retriever] = {}

    # The model --------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def llm(self) -> QLoRAChatModel:
        """The chat model, loaded on first use (base from settings, plus LOCAL_ADAPTER_PATH if set)."""
        llm = self._llm
        if llm is not None:
            return llm
        with self._lock:
            if self._llm is None:
                self.load(adapter_path=self.settings.local_adapter_path)
            return self._llm

    def load(
        self,
        model_name: str | None = None,
        adapter_path: str | Path | None = None,
        quantization: str | None = None,
        device: str | None = None,
        **gen_defaults: Any,
    ) -> dict[str, Any]:
        """(Re)load the base model, optionally with an adapter, and serve it instead of what
        was loaded. The new model is built aside: the current one keeps serving meanwhile and
        stays if the load fails (ModelNotFoundError, AdapterError or ModelLoadError, with the
        reason). Both are in memory while the new one loads."""
        from chains.llm import AdapterError, QLoRAChatModel

        with self._lock:
            self._loading = True
            try:
                new = QLoRAChatModel.load(
                    model_name,
                    adapter_path=adapter_path,
                    quantization=quantization,
                    device=device,
                    **gen_defaults,
                )
            except Exception as raised:
                error = _raised_inside(raised)
                if isinstance(error, ModelNotFoundError | AdapterError):
                    self._last_error = str(error)
                    raise error from None
                # A broken folder (bad config.json, missing weights), an unknown architecture...
                log.warning("Loading %r failed: %s", model_name or "the default model", error)
                log.debug("Loading failed", exc_info=raised)
                self._last_error = f"{type(error).__name__}: {error}"
                kept = "; the model that was loaded still serves" if self._llm else ""
                raise ModelLoadError(
                    f"Could not load model {model_name or 'the default model'!r} "
                    f"({type(error).__name__}: {error}){kept}."
                ) from raised
            finally:
                self._loading = False
            previous, self._llm = self._llm, new
            self._last_error = None
            if previous is not None:
                del previous
                self._free_memory()
        return self.status()

    def unload(self) -> None:
        """Free the model (the next use loads it again)."""
        with self._lock:
            self._release()

    def use_adapter(self, path: str | Path | None) -> dict[str, Any]:
        """Serve this adapter (attached, or reloaded if already attached), or None for the bare base."""
        with self._lock:
            llm = self.llm
            if path is None:
                llm.set_adapter(None)
            else:
                llm.load_adapter(path)
        return self.status()

    def _release(self) -> None:
        if self._llm is None:
            return
        self._llm = None
        self._free_memory()

    @staticmethod
    def _free_memory() -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # Chains ---------------------------------------------------------------------------------

    def retriever(self, collection: str | None = None) -> Retriever:
        from chains.retrieval import Retriever

        name = collection or self.settings.collection_name
        with self._lock:
            if name not in self._retrievers:
                self._retrievers[name] = Retriever(name, self.settings)
            return self._retrievers[name]

    def rag(self, collection: str | None = None, load_llm: bool = True) -> RagChain:
        """The RAG chain over a collection; `load_llm=False` gives a retrieval-only chain."""
        from chains.rag import RagChain

        return RagChain(
            self.llm if load_llm else self._llm, self.retriever(collection), self.settings
        )

    def summarizer(
        self,
        collection: str | None = None,
        mode: str | None = None,
        max_new_tokens: int | None = None,
    ) -> Summarizer:
        """The summarizer over a collection; `mode` verified | extractive | raw (default
        SUMMARY_MODE). An extractive one never loads the model."""
        from chains.summarize import Summarizer

        mode = mode or self.settings.summary_mode
        llm = None if mode == "extractive" else self.llm  # quotes only: no model to load
        return Summarizer(llm, self.retriever(collection), max_new_tokens, mode=mode)

    # Status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        llm = self._llm
        info = llm.info() if llm is not None else {}
        adapter_path = info.get("adapter")
        return {
            "loaded": llm is not None,
            "loading": self._loading,
            "model_name": info.get("model"),
            "model_path": info.get("model_path"),
            "adapter": info.get("adapter_name"),
            "adapter_path": adapter_path,
            # What the active adapter was trained to read, and a warning when that is not
            # the RAG evidence prompt the chat serves.
            "adapter_prompt_format": adapter_prompt_format(adapter_path),
            "adapter_warning": adapter_warning(adapter_path),
            "default_adapter": self.settings.local_adapter_path,
            "adapters": info.get("adapters", []),
            "device": info.get("device"),
            "quantization": info.get("quantization"),
            "dtype": info.get("dtype"),
            "context_window": info.get("context_window"),
            "collection": self.settings.collection_name,
            "retrieval_mode": self.settings.retrieval_mode,
            "retrieval_k": self.settings.retrieval_k,
            "score_threshold": self.settings.score_threshold,
            "last_error": self._last_error,
        }

    def available_adapters(self) -> list[dict[str, Any]]:
        """Adapter folders (holding adapter_config.json): the checkpoints folder's, the shipped
        ones (<data>/adapters) and LOCAL_ADAPTER_PATH's, each once, with its prompt format."""
        from services.paths import shipped_adapters_path

        found = find_adapters(self.settings.checkpoints_path, shipped_adapters_path(self.settings))
        default = self.settings.local_adapter_path
        if default and is_adapter_dir(default):
            known = {Path(a["path"]).resolve() for a in found}
            if Path(default).resolve() not in known:
                found.append(describe_adapter(Path(default), Path(default).parent))
        for adapter in found:
            adapter["prompt_format"] = adapter_prompt_format(adapter["path"])
            adapter["warning"] = adapter_warning(adapter["path"])
        return found


# What an adapter reads -------------------------------------------------------------------------

RAG_PROMPT_FORMAT = "rag-evidence"  # training_info.json "prompt_format" (finetune.data)


def adapter_prompt_format(path: str | Path | None) -> str | None:
    """rag-evidence | closed-book | mixed, as training recorded it; None for the bare base
    (or an adapter trained before the format was recorded)."""
    if not path:
        return None
    value = read_training_info(path).get("prompt_format")
    return str(value) if value else None


def adapter_warning(path: str | Path | None) -> str | None:
    """A warning when an adapter trained on another prompt serves the chat's RAG prompt."""
    fmt = adapter_prompt_format(path)
    if not path or fmt in (None, RAG_PROMPT_FORMAT):
        return None
    if fmt == "closed-book":
        what = "closed-book (bare questions under a system prompt, no sources)"
    else:
        what = f"{fmt} data (partly not the RAG evidence prompt)"
    return (
        f"The adapter {adapter_name(path)!r} was trained {what}, but the chat serves the RAG "
        "evidence prompt (numbered passages, then the question): expect fewer valid citations. "
        "Train a RAG adapter on `finetune data from-corpus` records or a feedback export."
    )


_assistant: Assistant | None = None
_assistant_lock = threading.Lock()


def get_assistant() -> Assistant:
    """The one Assistant of this process."""
    global _assistant
    with _assistant_lock:
        if _assistant is None:
            _assistant = Assistant()
        return _assistant
