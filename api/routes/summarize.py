"""`POST /api/summarize`: a summary of one indexed document, cited like an answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse

from api.auth import require_api_key
from api.disconnect import unless_disconnected
from api.schemas import SummarizeRequest, SummarizeResponse
from services import summaries

router = APIRouter(prefix="/api", tags=["summaries"], dependencies=[Depends(require_api_key)])

DESCRIPTION = """
A verified summary (the default) is the document's provisions that carry a limit, a duty, a
prohibition or a deadline, each quoted after its pinpoint and citing its numbered passage
(`§ 97.313(b): "No station may transmit with a transmitter power exceeding 1.5 kW PEP." [2]`;
`[n]` is `sources[n-1]`), with the model's condensed sentences only where the verifier keeps
them (every number in the cited passage, no repeats); what it removed is in `dropped`.
`raw` is the model's text as generated, for comparison. Long documents are summarized per
group of chunks and merged, verified after every step.

404: the document is not indexed (under that root); 409: the name is indexed under several
roots and `root` is missing (the body lists them); 429: the answer queue is full.
"""


@router.post(
    "/summarize",
    response_model=SummarizeResponse,
    summary="Summarize an indexed document (cited provisions, verified)",
    description=DESCRIPTION,
    responses={
        404: {"description": "Not indexed (under that root)."},
        409: {"description": "The name is indexed under several roots: give `root`."},
    },
)
async def summarize(body: SummarizeRequest, request: Request):
    try:
        result = await unless_disconnected(
            request, summaries.summarize_async(body.source, root=body.root, mode=body.mode)
        )
    except summaries.AmbiguousDocumentError as error:
        return JSONResponse(
            {"detail": str(error), "source": body.source, "roots": error.roots},
            status_code=status.HTTP_409_CONFLICT,
        )
    except summaries.SourceNotFoundError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    return summaries.response_payload(result, body.source)
