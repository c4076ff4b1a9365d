"""The indexed documents as the chat and the API see them: list, read, locate, remove."""

from __future__ import annotations

from pathlib import Path

from core.settings import get_settings
from ingest.pipeline import delete_source, document_text, list_sources


def list_documents() -> list[dict]:
    return list_sources()


def document_chunks(source: str) -> list[dict]:
    """The document's chunks in order (dicts of core.records.RetrievedChunk)."""
    return document_text(source)


def delete_document(source: str) -> int:
    """Remove the document's chunks from the index; returns how many were removed."""
    return delete_source(source)


def document_file(source: str) -> Path | None:
    """Where an indexed document lives on disk (its ingest root + source), if it still does."""
    chunks = document_text(source)
    roots = [c["metadata"].get("root") for c in chunks[:1] if c.get("metadata")]
    settings = get_settings()
    for root in [*roots, settings.uploads_path, settings.corpus_path]:
        if root and (Path(root) / source).is_file():
            return Path(root) / source
    return None
