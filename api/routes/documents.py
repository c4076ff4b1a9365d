"""Documents in the running collection: upload (ingest), list, delete."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile, status

from api.auth import require_api_key
from api.schemas import DocumentOut
from services import documents as indexed
from services import uploads

router = APIRouter(prefix="/api", tags=["documents"], dependencies=[Depends(require_api_key)])

MAX_FILES_PER_REQUEST = 20


def _store_all(files: list[tuple[str, Path]]) -> list[Path]:
    return [uploads.store_upload(name, temp) for name, temp in files]


@router.post(
    "/ingest",
    summary="Upload and ingest documents",
    description=(
        f"Multipart upload, field `files` (one or more). Accepted: {uploads.accepted_types_text()}; "
        "each at most MAX_UPLOAD_MB (413 otherwise; 415 for other types). Files are stored under "
        "the uploads folder and ingested into the running collection; re-uploading an unchanged "
        "file is a no-op. Returns the ingest report."
    ),
)
async def ingest(
    files: list[UploadFile] = File(..., description="The documents"),
) -> dict:
    if len(files) > MAX_FILES_PER_REQUEST:
        raise uploads.UploadRejectedError(f"At most {MAX_FILES_PER_REQUEST} files per request.")
    checked = []
    for upload in files:
        name = upload.filename or ""
        uploads.check_upload(name, upload.size)
        checked.append((name, upload))
    with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
        staged = []
        for index, (name, upload) in enumerate(checked):
            temp = Path(tmp) / str(index)
            temp.write_bytes(await upload.read())
            staged.append((name, temp))
        stored = await asyncio.to_thread(_store_all, staged)
    report = await asyncio.to_thread(uploads.ingest_files, stored)
    return {**report.to_dict(), "stored": [p.name for p in stored]}


@router.get("/documents", response_model=list[DocumentOut], summary="Indexed documents")
def documents():
    return indexed.list_documents()


@router.delete("/documents/{source:path}", summary="Remove a document from the index")
def delete_document(source: str) -> dict:
    removed = indexed.delete_document(source)
    if not removed:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"No indexed document {source!r}; GET /api/documents lists them.",
        )
    return {"source": source, "chunks_removed": removed}
