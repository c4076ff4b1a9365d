"""Base models loaded once, and the LoRA adapters one chat model attaches to its base.

`BASES` caches loaded base models by (resolved model path, quantization, device), so two
chat models on the same base load it once. Adapters are per chat model, and PEFT attaches
them *in place*: it swaps the base's own linear layers for LoRA layers, so a PeftModel
"wrapper" is no isolation at all, and an adapter attached for one chat model would run
inside every forward pass of any other chat model on that base. Hence the rule:

    a base is shared only while none of its chat models has an adapter attached.

The first adapter a chat model attaches makes its base private (copy-on-attach): the base
is taken out of the cache in place when no other chat model holds it, else the chat model
gets a fresh copy of its own (loaded again, so it costs that base's memory once more).
New chat models then never receive a base that carries someone's adapters. A private
base stays private; it is freed with its chat model. The cache holds bases weakly: a base
lives as long as some chat model uses it.

An `AdapterSet` is one chat model's adapters on its base: attach (after the base, shape
and template checks against the folder contract in `core.adapters`), activate, delete;
detaching the last adapter takes the LoRA layers out so the base runs exactly as loaded.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    TRAINING_INFO,
    adapter_chat_template,
    adapter_name,
    is_adapter_dir,
    prompt_template,
    read_json,
    safe_adapter_name,
)
from core.modeling import LoadedModel, load_base_model, pick_device, resolve_quantization
from core.models import resolve_base_model
from core.settings import get_settings

log = logging.getLogger(__name__)

_ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")

BaseKey = tuple[str, str, str]  # (resolved model path or hub id, quantization, device)


class AdapterError(ValueError):
    """An adapter cannot be used with the loaded base model; the message says why and what to do."""


# Bases ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Base:
    """A loaded base model and the locks its chat models share."""

    key: BaseKey
    loaded: LoadedModel
    model: Any  # the transformers model (LoRA layers injected while adapters are attached)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one `generate` at a time
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)
    holders: weakref.WeakSet = field(default_factory=weakref.WeakSet)  # the AdapterSets on it
    shared: bool = True  # in the cache; False once an adapter made it one chat model's own

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer


class BaseCache:
    """Loaded bases by (resolved path, quantization, device), shared while no adapter is attached."""

    def __init__(self, loader: Callable[..., LoadedModel] = load_base_model):
        self._loader = loader
        self._lock = threading.Lock()
        self._bases: weakref.WeakValueDictionary[BaseKey, Base] = weakref.WeakValueDictionary()

    @staticmethod
    def key(model: str | None, quantization: str | None, device: str | None) -> BaseKey:
        device = pick_device(device)
        return resolve_base_model(model), resolve_quantization(quantization, device), device

    def get(
        self, model: str | None, quantization: str | None, device: str | None, holder: Any
    ) -> Base:
        """The shared base for these settings (loaded now if no chat model holds it)."""
        key = self.key(model, quantization, device)
        name = model if model is not None else get_settings().local_base_model_path
        with self._lock:  # loading under the lock: concurrent first users load it once
            base = self._bases.get(key)
            if base is None:
                base = self._load(key, name)
                self._bases[key] = base
            base.holders.add(holder)
            return base

    def claim(self, base: Base, holder: Any) -> Base:
        """A base that `holder` alone uses, to attach adapters to (see the module docstring)."""
        with self._lock:
            if not base.shared:
                return base
            if self._others(base, holder):
                gc.collect()  # chat models already dropped but kept in reference cycles
            if not self._others(base, holder):
                if self._bases.get(base.key) is base:
                    del self._bases[base.key]
                base.shared = False
                return base
        log.info(
            "%s is shared by other chat models; loading a private copy for the adapter.",
            base.loaded.path,
        )
        fresh = self._load(base.key, base.loaded.name)
        fresh.shared = False
        fresh.holders.add(holder)
        base.holders.discard(holder)
        return fresh

    def __len__(self) -> int:
        return len(self._bases)

    def clear(self) -> None:
        """Forget the shared bases (chat models holding one keep it)."""
        with self._lock:
            self._bases.clear()

    @staticmethod
    def _others(base: Base, holder: Any) -> list:
        return [h for h in base.holders if h is not holder]

    def _load(self, key: BaseKey, name: str | None) -> Base:
        path, quantization, device = key
        loaded = self._loader(path, quantization=quantization, device=device)
        loaded = dataclasses.replace(loaded, name=name or "")
        if loaded.quantization == "4bit" and loaded.device == "cpu":
            _keep_cpu_4bit_layout(loaded.model)
        return Base(key, loaded, loaded.model)


BASES = BaseCache()


# The adapters on one chat model's base --------------------------------------------------


class AdapterSet:
    """One chat model's LoRA adapters on its base, and which one is active (None: the bare base)."""

    def __init__(
        self,
        model: str | None = None,
        quantization: str | None = None,
        device: str | None = None,
        cache: BaseCache | None = None,
    ):
        self.cache = cache if cache is not None else BASES
        self.lock = threading.Lock()  # this set and `self.base`; held through each generation
        self.base = self.cache.get(model, quantization, device, holder=self)
        self.peft: Any = None  # the PeftModel once an adapter is attached
        self.adapters: dict[str, dict] = {}  # name -> info
        self.active: str | None = None

    @property
    def loaded(self) -> LoadedModel:
        return self.base.loaded

    @property
    def model(self) -> Any:
        """What `generate` runs on: the PeftModel while adapters are attached, else the base."""
        return self.peft if self.peft is not None else self.base.model

    @property
    def active_info(self) -> dict | None:
        return self.adapters.get(self.active) if self.active else None

    def chat_template(self) -> str | None:
        """The active adapter's own template, else the base's (one policy: core.adapters)."""
        adapter = self.active_info
        return prompt_template(
            adapter["path"] if adapter else None, self.base.tokenizer.chat_template
        )

    @contextmanager
    def hold(self) -> Iterator[Any]:
        """Wait for the model (this set's lock, then the base's) and yield what to run.

        The bare base runs with the LoRA layers bypassed while no adapter is active.
        """
        with self.lock:
            base = self.base
            with base.lock, self._adapter_context():
                yield self.model

    # Changes ------------------------------------------------------------------------

    def load(self, path: str | Path, name: str | None = None, activate: bool = True) -> str:
        """Attach the LoRA adapter saved in `path` (reloading it if `name` is taken); return its name."""
        folder = Path(path).expanduser().resolve()
        if not is_adapter_dir(folder):
            raise AdapterError(
                f"{folder} holds no {ADAPTER_CONFIG}: point at an adapter folder saved by "
                "`python -m finetune train` (its `final_model/`) or by PEFT's save_pretrained."
            )
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        name = safe_adapter_name(name) if name else adapter_name(folder)
        self._check_base(folder, config)
        self._check_shapes(folder)
        template_matches = self._check_template(folder)
        with self.lock:
            self.base = self.cache.claim(self.base, self)
            if name in self.adapters:
                self._delete(name)
            self._attach(folder, name, config)
            self.adapters[name] = {
                "name": name,
                "path": str(folder),
                "base_model": config.get("base_model_name_or_path"),
                "rank": config.get("r"),
                "template_matches": template_matches,
                "training_info": read_json(folder / TRAINING_INFO),
            }
            if activate:
                self._activate(name)
            elif self.active is None:
                self._activate(None)
        log.info("Loaded adapter %r from %s", name, folder)
        return name

    def set_active(self, name: str | None) -> None:
        """Make a loaded adapter active, or None to run the bare base model."""
        if name is not None and name not in self.adapters:
            raise AdapterError(
                f"No adapter named {name!r} is loaded (loaded: {', '.join(self.adapters) or 'none'})."
            )
        with self.lock:
            self._activate(name)

    def unload(self, name: str) -> None:
        """Remove a loaded adapter; the base model is untouched."""
        if name not in self.adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded.")
        with self.lock:
            self._delete(name)

    def _attach(self, folder: Path, name: str, config: dict) -> None:
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(
                    self.base.model, str(folder), adapter_name=name
                )
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
            self.peft.eval()
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            self._clean_failed_attach(name)
            raise AdapterError(
                f"Adapter {folder} does not fit the loaded base model {self.loaded.path} "
                f"(it was trained on {config.get('base_model_name_or_path') or 'an unrecorded base'}): "
                f"{error}"
            ) from error

    def _clean_failed_attach(self, name: str) -> None:
        if self.peft is not None and self.adapters:
            if name in self.peft.peft_config:
                self.peft.delete_adapter(name)
            self._activate(self.active if self.active in self.adapters else None)
            return
        _strip_tuner_layers(self.base.model)
        self.peft = None

    def _activate(self, name: str | None) -> None:
        if name is not None:
            self.peft.set_adapter(name)
        self.active = name

    def _delete(self, name: str) -> None:
        del self.adapters[name]
        if not self.adapters:
            # The last one: take the LoRA layers out so the base runs exactly as loaded.
            self.base.model = self.peft.unload()
            self.base.model.__dict__.pop("peft_config", None)
            self.peft = None
            self.active = None
            return
        self.peft.delete_adapter(name)
        if self.active == name:
            self.active = None
        if self.active is not None:
            self.peft.set_adapter(self.active)

    def _adapter_context(self):
        if self.peft is not None and self.active is None:
            return self.peft.disable_adapter()
        return nullcontext()

    # Checks before touching the base ------------------------------------------------

    def _check_base(self, folder: Path, config: dict) -> None:
        recorded = config.get("base_model_name_or_path") or ""
        if not recorded:
            log.warning(
                "Adapter %s records no base model; it cannot be checked against the base.", folder
            )
            return
        recorded_dir = Path(recorded).expanduser()
        if (recorded_dir / "config.json").is_file():
            theirs = json.loads((recorded_dir / "config.json").read_text())
            ours = self.base.model.config
            differing = [
                k for k in _ARCHITECTURE_KEYS if k in theirs and theirs[k] != getattr(ours, k, None)
            ]
            if differing:
                raise AdapterError(
                    f"Adapter {folder} was trained on {recorded}, which differs from the loaded base "
                    f"{self.loaded.path} in {', '.join(differing)}. Load the adapter's base model "
                    "(LOCAL_BASE_MODEL_PATH) or pick an adapter trained on this one."
                )
            return
        names = {_model_stem(self.loaded.path), _model_stem(self.loaded.name)}
        if _model_stem(recorded) not in names:
            log.warning(
                "Adapter %s was trained on %r and the loaded base is %r; the names differ and %r is "
                "not on this machine, so only the weight shapes can be checked.",
                folder,
                recorded,
                self.loaded.path,
                recorded,
            )

    def _check_shapes(self, folder: Path) -> None:
        """Compare the LoRA matrices' shapes with the base model's layers before touching it."""
        weights = folder / ADAPTER_WEIGHTS
        if not weights.is_file():
            return
        from safetensors import safe_open

        modules = dict(self.base.model.named_modules())
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
                        f"Adapter {folder} does not fit the loaded base model {self.loaded.path}: "
                        f"{key} has shape {list(shape)}, the base has "
                        f"{'no layer ' + module_name if module is None else f'{expected_dim} features'}. "
                        "Load the base model the adapter was trained on."
                    )

    def _check_template(self, folder: Path) -> bool | None:
        """Warn when the adapter was trained with another chat template than the one in use."""
        template = adapter_chat_template(folder)
        if template is None:
            return None
        ours = self.base.tokenizer.chat_template or ""
        if template.strip() == ours.strip():
            return True
        message = (
            f"Adapter {folder} was trained with a different chat template than the base tokenizer's; "
            "it is prompted with its own template while active (core.adapters.prompt_template), "
            "so the base and the adapter see differently formatted prompts."
        )
        warnings.warn(message, stacklevel=4)
        log.warning(message)
        return False


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
