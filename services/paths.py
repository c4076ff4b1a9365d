"""Paths that API callers may name: only inside the data and checkpoints folders.

Everything a client sends as a path (`adapter_path`, `output_dir`, a model folder) is
resolved first (symlinks and `..` included) and then checked against the allowed roots,
so `../../etc` or an absolute path elsewhere never reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings, get_settings


class PathNotAllowedError(ValueError):
    """A client-supplied path points outside the allowed folders."""


def allowed_roots(settings: Settings | None = None) -> list[Path]:
    settings = settings or get_settings()
    return [settings.checkpoints_path.resolve(), settings.data_dir.resolve()]


def resolve_inside(
    raw: str | Path, base: Path | None = None, settings: Settings | None = None
) -> Path:
    """Resolve `raw` (relative paths against `base`, default the checkpoints folder)
    and return it if it lies inside an allowed root; raise PathNotAllowedError otherwise."""
    settings = settings or get_settings()
    text = str(raw).strip()
    if not text or "\x00" in text:
        raise PathNotAllowedError("The path is empty.")
    base = (base or settings.checkpoints_path).resolve()
    candidate = Path(text).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    roots = allowed_roots(settings)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise PathNotAllowedError(
            f"{text!r} is outside the allowed folders ({', '.join(str(r) for r in roots)}). "
            "Give a path inside the checkpoints folder (relative paths are taken from there) "
            "or the data folder."
        )
    return resolved
