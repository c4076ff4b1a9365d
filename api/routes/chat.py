"""`POST /api/chat`: a question with its history, answered from the indexed documents."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from api.auth import require_api_key
from api.disconnect import unless_disconnected
from api.schemas import ChatRequest, ChatResponse
from services import conversation

router = APIRouter(prefix="/api", tags=["chat"], dependencies=[Depends(require_api_key)])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

CHAT_DESCRIPTION = """
The last message is the question (role `user`); earlier user/assistant messages are the
history the question is condensed with. Sources are numbered: `[n]` in the answer cites
`sources[n-1]` (field `n`). The model is loaded on first use (also after
`POST /api/chat/qlora/unload`; only `/api/chat/qlora/chat` answers 409 then).

With `"stream": true` the response is `text/event-stream`:

* `data: {"type": "token", "content": "..."}` — one event per generated token;
* `data: {"type": "final", ...}` — once, with the whole ChatResponse (answer, sources, id, …);
* `data: {"type": "error", "detail": "..."}` — instead of `final` if generation failed;
* `data: [DONE]` — the end.
"""


def sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def options_of(body: ChatRequest) -> conversation.AskOptions:
    return conversation.AskOptions(
        k=body.k,
        mode=body.mode,
        max_new_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        answer_mode=body.answer_mode,
    )


async def stream_events(events: AsyncIterator, channel: str) -> AsyncIterator[str]:
    try:
        async for kind, value in events:
            if kind == "token":
                yield sse({"type": "token", "content": value})
            elif kind == "done" and conversation.failure(value):
                yield sse({"type": "error", "detail": conversation.failure(value)})
            elif kind == "done":
                answer_id = await asyncio.to_thread(conversation.record, value, channel)
                yield sse({"type": "final", **conversation.response_payload(value, answer_id)})
    except Exception as error:  # the stream has started: report in-band
        yield sse({"type": "error", "detail": f"{type(error).__name__}: {error}"})
    yield sse("[DONE]")


@router.post(
    "/chat",
    response_model=ChatResponse,
    summary="Ask a question (JSON, or Server-Sent Events with stream=true)",
    description=CHAT_DESCRIPTION,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat(body: ChatRequest, request: Request):
    question, history = conversation.split_conversation((m.role, m.content) for m in body.messages)
    options = options_of(body)
    if body.stream:  # ask_stream takes the queue slot now: a full queue is a 429, not an event
        return StreamingResponse(
            stream_events(conversation.ask_stream(question, history, options), "api"),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    result = await unless_disconnected(request, conversation.ask_async(question, history, options))
    answer_id = await asyncio.to_thread(conversation.record, result, "api")
    return conversation.response_payload(result, answer_id)
