"""A chunk as read back from the store: what ingest lists, retrieval ranks and chains cite."""

from __future__ import annotations

from dataclasses import dataclass, field

from langchain_core.documents import Document

from core.store import CONTENT_KEY, METADATA_KEY


@dataclass
class RetrievedChunk:
    id: str
    text: str
    score: float | None
    metadata: dict = field(default_factory=dict)
    dense_score: float | None = None
    # Which rankings found it: "dense", "sparse", "section" (the query named its section).
    matched_by: list[str] = field(default_factory=list)

    @property
    def source(self) -> str | None:
        return self.metadata.get("source")

    @property
    def page(self) -> int | None:
        return self.metadata.get("page")

    @property
    def section(self) -> str | None:
        return self.metadata.get("section")

    @property
    def heading(self) -> str | None:
        return self.metadata.get("heading")

    @property
    def chunk_index(self) -> int | None:
        return self.metadata.get("chunk_index")

    @classmethod
    def from_record(cls, record, score: float | None = None) -> RetrievedChunk:
        payload = record.payload or {}
        return cls(
            id=str(record.id),
            text=payload.get(CONTENT_KEY, ""),
            score=score,
            metadata=dict(payload.get(METADATA_KEY) or {}),
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "text": self.text,
            "score": self.score,
            "dense_score": self.dense_score,
            "source": self.source,
            "page": self.page,
            "section": self.section,
            "heading": self.heading,
            "chunk_index": self.chunk_index,
            "matched_by": self.matched_by,
            "metadata": self.metadata,
        }

    def to_document(self) -> Document:
        metadata = {
            **self.metadata,
            "id": self.id,
            "score": self.score,
            "dense_score": self.dense_score,
            "matched_by": self.matched_by,
        }
        return Document(page_content=self.text, metadata=metadata, id=self.id)
