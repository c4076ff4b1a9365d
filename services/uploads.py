"""Uploaded documents: checked, stored under settings.uploads_path, ingested into the
running collection. The chat upload and `POST /api/ingest` both call these functions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from core.settings import Settings, get_settings
from ingest.loaders import LOADERS, UNSUPPORTED_HINTS

ACCEPTED_SUFFIXES = tuple(LOADERS)  # what the ingest pipeline can read


class UploadRejectedError(ValueError):
    status_code = 400


class UnsupportedTypeError(UploadRejectedError):
    status_code = 415


class UploadTooLargeError(UploadRejectedError):
    status_code = 413


def accepted_types_text() -> str:
    return ", ".join(ACCEPTED_SUFFIXES)


def safe_filename(name: str) -> str:
    """The bare file name, without folders or characters that could escape the upload folder."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]+", "_", base).strip(" .")
    if not cleaned:
        raise UploadRejectedError(f"{name!r} is not a usable file name.")
    return cleaned


def check_upload(name: str, size: int | None, settings: Settings | None = None) -> str:
    """Validate an upload's type and size; return its safe file name."""
    settings = settings or get_settings()
    filename = safe_filename(name)
    suffix = Path(filename).suffix.lower()
    if suffix not in ACCEPTED_SUFFIXES:
        hint = f" ({UNSUPPORTED_HINTS[suffix]})" if suffix in UNSUPPORTED_HINTS else ""
        raise UnsupportedTypeError(
            f"{name!r}: unsupported file type{hint}. Accepted types: {accepted_types_text()}."
        )
    limit = settings.max_upload_mb * 1024 * 1024
    if size is not None and size > limit:
        raise UploadTooLargeError(
            f"{name!r} is {size / 1024 / 1024:.1f} MB; the limit is {settings.max_upload_mb} MB "
            "(MAX_UPLOAD_MB)."
        )
    return filename


def store_upload(name: str, source: Path | bytes, settings: Settings | None = None) -> Path:
    """Copy an upload (a temp file path or bytes) into the uploads folder; return its path."""
    settings = settings or get_settings()
    size = source.stat().st_size if isinstance(source, Path) else len(source)
    filename = check_upload(name, size, settings)
    folder = settings.uploads_path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if isinstance(source, Path):
        shutil.copyfile(source, target)
    else:
        target.write_bytes(source)
    return target


def ingest_files(paths: list[Path], settings: Settings | None = None):
    """Ingest stored uploads into the running collection (uploads folder = ingest root)."""
    from ingest.pipeline import ingest_paths

    settings = settings or get_settings()
    # ingest.pipeline serializes writers of this process (the embedded store is shared).
    return ingest_paths(
        [Path(p) for p in paths], progress=False, settings=settings, root=settings.uploads_path
    )
