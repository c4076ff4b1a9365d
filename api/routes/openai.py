"""OpenAI-compatible chat completions (answers come from the RAG chain, with `sources`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from api.auth import require_api_key
from api.routes.chat import SSE_HEADERS, sse
from api.schemas import OpenAIChatRequest
from services import conversation

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])


def model_id() -> str:
    a = conversation.assistant()
    if a.loaded:
        info = a.llm.info()
        name = str(info.get("model") or "fcc-rag")
        return f"{name}+{info['adapter']}" if info.get("adapter") else name
    return "fcc-rag"


def _usage(result) -> dict:
    prompt = int(result.usage.get("prompt_tokens") or 0)
    completion = int(result.usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chunk(
    completion_id: str, created: int, model: str, delta: dict, finish: str | None = None
) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def _stream(question, history, options) -> AsyncIterator[str]:
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    model = None
    try:
        async for kind, value in conversation.ask_stream(question, history, options):
            model = model or model_id()
            if kind == "retrieved":
                yield sse(
                    _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
                )
            elif kind == "token":
                yield sse(_chunk(completion_id, created, model, {"content": value}))
            elif kind == "done" and conversation.failure(value):
                yield sse(
                    {"error": {"message": conversation.failure(value), "type": "server_error"}}
                )
            elif kind == "done":
                answer_id = conversation.record(value, "openai")
                final = _chunk(completion_id, created, model, {}, "stop")
                final.update(
                    sources=conversation.sources_of(value), answer_id=answer_id, usage=_usage(value)
                )
                yield sse(final)
    except Exception as error:
        yield sse(
            {"error": {"message": f"{type(error).__name__}: {error}", "type": "server_error"}}
        )
    yield sse("[DONE]")


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion (stream=true: chat.completion.chunk SSE)",
    description="Extra fields: `sources` (the numbered sources the answer cites as [n]) and "
    "`answer_id` (for POST /api/feedback), on the response or on the final chunk.",
)
def chat_completions(body: OpenAIChatRequest):
    question, history = conversation.split_conversation((m.role, m.content) for m in body.messages)
    options = conversation.AskOptions(
        max_new_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        answer_mode=body.answer_mode,
    )
    if body.stream:
        return StreamingResponse(
            _stream(question, history, options), media_type="text/event-stream", headers=SSE_HEADERS
        )
    result = conversation.ask(question, history, options)
    answer_id = conversation.record(result, "openai")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id(),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer or ""},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(result),
        "sources": conversation.sources_of(result),
        "answer_id": answer_id,
    }


@router.get("/models", summary="The served model")
def models() -> dict:
    return {
        "object": "list",
        "data": [{"id": model_id(), "object": "model", "created": 0, "owned_by": "local"}],
    }
