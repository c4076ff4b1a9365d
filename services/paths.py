"""Paths that API callers may name: adapters and training outputs, nowhere else.

Everything a client sends as a path (`adapter_path`, `output_dir`, a model folder) is
resolved first (symlinks and `..` included) and then checked against the allowed roots,
so `../../etc`, an absolute path elsewhere or the corpus and uploads folders never reach
the file system:

- the checkpoints folder (`settings.checkpoints_path`): read and written (training output),
  `resolve_inside`;
- the shipped-adapters folder (`<data_dir>/adapters`): read only, `resolve_readable`
  (loadable, never an output).
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings, get_settings

SHIPPED_ADAPTERS = "adapters"  # under the data folder: adapters that ship with the project


class PathNotAllowedError(ValueError):
    """A client-supplied path points outside the allowed folders."""


def shipped_adapters_path(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.data_dir / SHIPPED_ADAPTERS


def allowed_roots(settings: Settings | None = None) -> list[Path]:
    """Where a client may name a path to write (a training output_dir) or read: the
    checkpoints folder."""
    settings = settings or get_settings()
    return [settings.checkpoints_path.resolve()]


def readable_roots(settings: Settings | None = None) -> list[Path]:
    """Where a client may name an adapter to load: also the shipped-adapters folder."""
    settings = settings or get_settings()
    return [*allowed_roots(settings), shipped_adapters_path(settings).resolve()]


def _resolve(raw: str | Path, base: Path | None, settings: Settings, roots: list[Path]) -> Path:
    text = str(raw).strip()
    if not text or "\x00" in text:
        raise PathNotAllowedError("The path is empty.")
    base = (base or settings.checkpoints_path).resolve()
    candidate = Path(text).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise PathNotAllowedError(
            f"{text!r} is outside the allowed folders ({', '.join(str(r) for r in roots)}). "
            "Give a path inside the checkpoints folder (relative paths are taken from there)"
            + (", or the shipped-adapters folder to load from." if len(roots) > 1 else ".")
        )
    return resolved


def resolve_inside(
    raw: str | Path, base: Path | None = None, settings: Settings | None = None
) -> Path:
    """A path that may be written (a training output_dir) or read: relative paths are taken
    from `base` (default: the checkpoints folder); it must lie in the checkpoints folder,
    else PathNotAllowedError."""
    settings = settings or get_settings()
    return _resolve(raw, base, settings, allowed_roots(settings))


def resolve_readable(
    raw: str | Path, base: Path | None = None, settings: Settings | None = None
) -> Path:
    """A path that is only read (an adapter folder to load): the checkpoints folder or the
    shipped-adapters folder (read only: never give this to something that writes)."""
    settings = settings or get_settings()
    return _resolve(raw, base, settings, readable_roots(settings))
