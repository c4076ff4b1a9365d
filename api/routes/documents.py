"""Documents in the running collection: upload (ingest), list, delete."""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from fastapi.responses import JSONResponse

from api.auth import require_api_key
from api.schemas import DocumentOut
from services import documents as indexed
from services import uploads

router = APIRouter(prefix="/api", tags=["documents"], dependencies=[Depends(require_api_key)])

MAX_FILES_PER_REQUEST = 20


def _store_all(files: list[tuple[str, BinaryIO]]) -> list[uploads.StoredUpload]:
    return [uploads.save_upload(name, handle) for name, handle in files]


@router.post(
    "/ingest",
    summary="Upload and ingest documents",
    description=(
        f"Multipart upload, field `files` (one or more). Accepted: {uploads.accepted_types_text()}; "
        "each at most MAX_UPLOAD_MB: the body is counted as it arrives and refused with 413 "
        "once it passes the limit (415 for other types). Files are stored under the uploads "
        "folder and ingested into the running collection. Re-uploading an unchanged file is a "
        "no-op; a file whose name is taken by a different document is stored as `name (2).ext` "
        "(listed under `renamed`). Returns the ingest report."
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
        checked.append((name, upload.file))
    # Copied to the uploads folder in chunks, in a worker thread (never on the event loop).
    stored = await asyncio.to_thread(_store_all, checked)
    report = await asyncio.to_thread(uploads.ingest_files, [s.path for s in stored])
    renamed = [
        {"uploaded": s.requested, "stored_as": s.path.name, "note": s.note()}
        for s in stored
        if s.renamed
    ]
    return {**report.to_dict(), "stored": [s.path.name for s in stored], "renamed": renamed}


@router.get("/documents", response_model=list[DocumentOut], summary="Indexed documents")
def documents():
    return indexed.list_documents()


@router.delete(
    "/documents/{source:path}",
    summary="Remove a document from the index",
    responses={
        404: {"description": "Not indexed (under that root)."},
        409: {"description": "The name is indexed under several roots: give `root`."},
    },
)
def delete_document(
    source: str,
    root: str | None = Query(
        None,
        description="The ingest root (as the 409 lists them), or `uploads` / `corpus`; "
        "needed only when the name is indexed under several roots.",
    ),
) -> dict:
    """Removes the document's chunks. An upload's stored file is deleted too; a corpus
    document's file stays on disk (the response's `note` says so) and comes back on the next
    ingest of the corpus unless it is removed from that folder."""
    try:
        removed = indexed.delete_document(source, root=root)
    except indexed.AmbiguousDocumentError as error:
        return JSONResponse(
            {"detail": str(error), "source": source, "roots": error.roots},
            status_code=status.HTTP_409_CONFLICT,
        )
    if removed is None:
        where = f" under root {root!r}" if root else ""
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"No indexed document {source!r}{where}; GET /api/documents lists them.",
        )
    return removed.to_dict()
