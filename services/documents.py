"""The indexed documents as the chat and the API see them: list, read, locate, remove.

A document is (root, source): the folder it was ingested from and its path there. The same
name can be indexed from several roots (a corpus file uploaded again); removing one names
its root. Removing an upload deletes its stored file too; removing a corpus document only
takes it out of the index (the file stays, so the next ingest of the corpus brings it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings, get_settings
from ingest.pipeline import delete_source, document_text, list_sources


class AmbiguousDocumentError(ValueError):
    """The name is indexed under several roots and none was given."""

    def __init__(self, source: str, roots: list[str]):
        self.source, self.roots = source, roots
        super().__init__(
            f"{source!r} is indexed under {len(roots)} roots ({', '.join(roots)}); "
            "say which with ?root=<one of them> (or root=uploads / root=corpus)."
        )


@dataclass(frozen=True)
class Removed:
    source: str
    root: str
    chunks_removed: int
    file_removed: bool
    note: str | None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "root": self.root,
            "chunks_removed": self.chunks_removed,
            "file_removed": self.file_removed,
            "note": self.note,
        }


def list_documents() -> list[dict]:
    return list_sources()


def document_chunks(source: str) -> list[dict]:
    """The document's chunks in order (dicts of core.records.RetrievedChunk)."""
    return document_text(source)


def as_of_dates(sources) -> dict[str, str]:
    """{source: its text's point-in-time date} for those of `sources` whose chunks state one
    (eCFR XML ingested beside a SOURCES.md naming it, data/corpus/ecfr/)."""
    dates: dict[str, str] = {}
    for source in dict.fromkeys(s for s in sources if s):
        chunks = document_text(source)
        found = {(c.get("metadata") or {}).get("as_of") for c in chunks} - {None}
        if len(found) == 1:
            dates[source] = found.pop()
    return dates


def document_roots(source: str) -> list[str]:
    """The ingest roots the name is indexed under, sorted."""
    roots = {(c.get("metadata") or {}).get("root") for c in document_text(source)}
    return sorted(r for r in roots if r)


def _named_root(root: str, settings: Settings) -> str:
    aliases = {"uploads": settings.uploads_path, "corpus": settings.corpus_path}
    path = aliases.get(root.strip(), Path(root.strip()))
    return path.expanduser().resolve().as_posix()


def _remove_upload_file(root: str, source: str, settings: Settings) -> bool:
    """Delete the stored file when it lies in the uploads folder; True if it was deleted."""
    uploads = settings.uploads_path.resolve()
    if Path(root).resolve() != uploads:
        return False
    path = (uploads / source).resolve()
    if not path.is_relative_to(uploads) or not path.is_file():
        return False
    path.unlink()
    return True


def _note(root: str, source: str, file_removed: bool, settings: Settings) -> str | None:
    if file_removed:
        return None
    if Path(root).resolve() == settings.corpus_path.resolve():
        return (
            f"Removed from the index only: the file stays on disk under {root} and comes back "
            "on the next ingest of the corpus (`make run` ingests it) unless it is removed "
            "from that folder."
        )
    if (Path(root) / source).exists():
        return (
            f"Removed from the index only: the file stays on disk at {Path(root) / source} and "
            "comes back if that folder is ingested again."
        )
    return None


def delete_document(source: str, root: str | None = None) -> Removed | None:
    """Remove one document (its chunks; its stored file too if it is an upload).

    `root`: the ingest root as listed, or `uploads` / `corpus`; needed only when the name
    is indexed under several roots (AmbiguousDocumentError otherwise). None when the
    document is not indexed (under that root)."""
    settings = get_settings()
    roots = document_roots(source)
    if root is not None:
        wanted = _named_root(root, settings)
        roots = [r for r in roots if Path(r).resolve().as_posix() == wanted]
    if not roots:
        return None
    if len(roots) > 1:
        raise AmbiguousDocumentError(source, roots)
    chosen = roots[0]
    removed = delete_source(source, root=chosen)
    file_removed = _remove_upload_file(chosen, source, settings)
    return Removed(
        source, chosen, removed, file_removed, _note(chosen, source, file_removed, settings)
    )


def resolve_root(root: str) -> str:
    """An ingest root as chunks record it: `uploads` / `corpus` or a folder, made absolute."""
    return _named_root(root, get_settings())


def document_file(source: str) -> Path | None:
    """Where an indexed document lives on disk (its ingest root + source), if it still does."""
    chunks = document_text(source)
    roots = [c["metadata"].get("root") for c in chunks[:1] if c.get("metadata")]
    settings = get_settings()
    for root in [*roots, settings.uploads_path, settings.corpus_path]:
        if root and (Path(root) / source).is_file():
            return Path(root) / source
    return None
