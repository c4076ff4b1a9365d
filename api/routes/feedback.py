"""Feedback on answers and its export as a fine-tuning dataset."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import PlainTextResponse

from api.auth import require_api_key
from api.schemas import FeedbackRequest
from services.feedback import UnknownAnswerError, get_feedback_store

router = APIRouter(
    prefix="/api/feedback", tags=["feedback"], dependencies=[Depends(require_api_key)]
)


@router.post("", summary="Rate an answer (👍 = 1, 👎 = 0), optionally with a correction")
def give_feedback(body: FeedbackRequest) -> dict:
    try:
        feedback_id = get_feedback_store().rate(body.answer_id, body.rating, body.correction)
    except UnknownAnswerError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"No answer with id {body.answer_id!r}."
        ) from None
    return {"feedback_id": feedback_id, "answer_id": body.answer_id}


@router.get(
    "/export",
    summary="The fine-tuning dataset (JSONL)",
    response_class=PlainTextResponse,
    description="Chat-format JSONL (`messages`, plus question, answer, correction, rating, "
    "sources), as `python -m services.feedback export` writes it and `python -m finetune train "
    "--data` reads it. Only rows with a good target unless `all=true`.",
)
def export(all: bool = Query(False, description="Include 👎 answers without a correction")):
    lines = [json.dumps(e, ensure_ascii=False) for e in get_feedback_store().examples(all)]
    return PlainTextResponse(
        "".join(line + "\n" for line in lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="feedback.jsonl"'},
    )


@router.get("/stats", summary="Counts of answers and ratings")
def stats() -> dict:
    return get_feedback_store().stats()
