"""Uploaded documents: checked, stored under settings.uploads_path, ingested into the
running collection. The chat upload and `POST /api/ingest` both call these functions.

An upload never replaces another document: the same bytes under a stored name are a no-op,
different bytes under a taken name are stored as `name (2).ext` (and the caller is told)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


@dataclass(frozen=True)
class StoredUpload:
    """Where an upload went. `renamed`: another document already had its name, so it is
    stored under a new one (`name (2).pdf`); `unchanged`: the same bytes were already stored
    under that name (nothing was written)."""

    requested: str  # the safe file name asked for
    path: Path
    unchanged: bool = False

    @property
    def renamed(self) -> bool:
        return self.path.name != self.requested

    def note(self) -> str | None:
        if self.renamed and not self.unchanged:
            return (
                f"{self.requested!r} already exists in the uploads folder with different "
                f"content; this upload was stored as {self.path.name!r}."
            )
        if self.renamed:
            return f"{self.requested!r} is the same file as the stored {self.path.name!r}."
        return None


_COPY_CHUNK = 1024 * 1024
_MAX_SAME_NAME = 1000


def _candidates(filename: str):
    yield filename
    stem, suffix = Path(filename).stem, Path(filename).suffix
    for number in range(2, _MAX_SAME_NAME + 1):
        yield f"{stem} ({number}){suffix}"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stage(source: Path | bytes | BinaryIO, folder: Path, name: str, limit: int) -> Path:
    """Copy the upload into a hidden temp file in `folder` (ingest skips dot files), in
    chunks, refusing it once it passes `limit` bytes."""
    handle, temp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    written = 0
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(source, bytes):
                reader: BinaryIO = io.BytesIO(source)
            elif isinstance(source, Path):
                reader = source.open("rb")
            else:
                reader = source
            try:
                while chunk := reader.read(_COPY_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise UploadTooLargeError(
                            f"{name!r} is over the limit of {limit // (1024 * 1024)} MB "
                            "(MAX_UPLOAD_MB)."
                        )
                    out.write(chunk)
            finally:
                if isinstance(source, Path):
                    reader.close()
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _place(temp: Path, target: Path) -> None:
    """Give `temp`'s bytes the name `target`; FileExistsError if that name is taken."""
    try:
        os.link(temp, target)  # atomic, and never replaces an existing file
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create, then copy
        with target.open("xb") as out, temp.open("rb") as data:
            shutil.copyfileobj(data, out, _COPY_CHUNK)


def save_upload(
    name: str, source: Path | bytes | BinaryIO, settings: Settings | None = None
) -> StoredUpload:
    """Store an upload (a temp file path, bytes or a binary file object) in the uploads
    folder without ever replacing another document: the same bytes under the same name are
    a no-op; different bytes under a taken name are stored as `name (2).ext`."""
    settings = settings or get_settings()
    size = (
        source.stat().st_size
        if isinstance(source, Path)
        else len(source)
        if isinstance(source, bytes)
        else None
    )
    filename = check_upload(name, size, settings)
    folder = settings.uploads_path
    folder.mkdir(parents=True, exist_ok=True)
    temp = _stage(source, folder, name, settings.max_upload_mb * 1024 * 1024)
    try:
        digest = _file_digest(temp)
        size = temp.stat().st_size
        for candidate in _candidates(filename):
            target = folder / candidate
            try:
                _place(temp, target)
                return StoredUpload(filename, target)
            except FileExistsError:
                same_size = target.is_file() and target.stat().st_size == size
                if same_size and _file_digest(target) == digest:
                    return StoredUpload(filename, target, unchanged=True)
        raise UploadRejectedError(
            f"{filename!r}: {_MAX_SAME_NAME} documents of that name are stored already; "
            "rename the file."
        )
    finally:
        temp.unlink(missing_ok=True)


def store_upload(
    name: str, source: Path | bytes | BinaryIO, settings: Settings | None = None
) -> Path:
    """Store an upload (see save_upload); return its path in the uploads folder."""
    return save_upload(name, source, settings).path


def ingest_files(paths: list[Path], settings: Settings | None = None):
    """Ingest stored uploads into the running collection (uploads folder = ingest root)."""
    from ingest.pipeline import ingest_paths

    settings = settings or get_settings()
    # ingest.pipeline serializes writers of this process (the embedded store is shared).
    return ingest_paths(
        [Path(p) for p in paths], progress=False, settings=settings, root=settings.uploads_path
    )
