"""OpenAI-compatible chat completions (answers come from the RAG chain, with `sources`).

What an OpenAI client gets, and what differs:

* `finish_reason` is "length" when `max_tokens` (or a generation time limit) cut the model's
  text, else "stop" (also when the verified answer mode stops early on its own);
* `system` / `developer` messages are used: put before the assistant's own instructions
  (answer from the numbered sources only, cite every fact as [n]), which stay;
* a field this endpoint does not implement (`tools`, `response_format`, `stop`, `logprobs`,
  ...) is refused (400, code `unsupported_parameter`) unless its value changes nothing;
* errors on `/v1` are OpenAI error objects `{"error": {"message", "type", "param", "code"}}`,
  malformed bodies included (400, as OpenAI answers them);
* extra fields OpenAI clients ignore: `sources` (the numbered sources the answer cites as
  [n]), `answer_id` (for POST /api/feedback), `abstained`; on the response, or on the chunk
  with `finish_reason` when streamed. `answer_mode` is accepted as an extra body field
  (the openai client: `extra_body={"answer_mode": "raw"}`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from api.auth import require_api_key
from api.disconnect import unless_disconnected
from api.routes.chat import SSE_HEADERS, sse
from api.schemas import OpenAIChatRequest
from services import conversation

PREFIX = "/v1"
router = APIRouter(prefix=PREFIX, tags=["openai"], dependencies=[Depends(require_api_key)])

_NO_TOOLS = "tools (function calling) are not supported: answers come from the indexed documents"
# Why a field is refused, for the error message (others: "... is not supported").
UNSUPPORTED = {
    "tools": _NO_TOOLS,
    "tool_choice": _NO_TOOLS,
    "parallel_tool_calls": _NO_TOOLS,
    "functions": _NO_TOOLS,
    "function_call": _NO_TOOLS,
    "response_format": "only plain-text answers are supported (no JSON mode, no structured "
    "outputs): the answer is text citing its sources as [n]",
    "stop": "custom stop sequences are not supported: the assistant ends its cited answer itself",
    "logprobs": "log probabilities are not returned",
    "top_logprobs": "log probabilities are not returned",
    "logit_bias": "logit_bias is not supported",
    "seed": "seed is not supported (temperature 0, the default, is deterministic)",
    "frequency_penalty": "only 0 is supported",
    "presence_penalty": "only 0 is supported",
    "audio": "only text is supported",
    "modalities": "only text is supported",
}


# Errors ----------------------------------------------------------------------------------------


def error_object(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code=None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param(loc: Sequence[Any]) -> str | None:
    """("body", "messages", 0, "role") -> "messages[0].role"."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or None


def validation_error_body(errors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's validation errors as one OpenAI error object (param, code: the first's)."""
    messages, first = [], None
    for error in errors:
        param, kind = _param(error.get("loc") or ()), error.get("type")
        if kind == "extra_forbidden":
            name = str((error.get("loc") or ("",))[-1])
            why = UNSUPPORTED.get(name, "this endpoint does not implement it")
            text, code = f"Unsupported parameter: '{name}': {why}.", "unsupported_parameter"
        elif kind == "missing":
            text = f"Missing required parameter: '{param}'." if param else "The body is missing."
            code = "missing_required_parameter"
        elif kind == "json_invalid":
            text, code, param = "The request body is not valid JSON.", "invalid_json", None
        else:
            text = str(error.get("msg") or "invalid").removeprefix("Value error, ")
            text = f"{param}: {text}" if param else text
            code = "unsupported_value" if kind == "unsupported_value" else "invalid_value"
        messages.append(text)
        first = first or (param, code)
    param, code = first or (None, None)
    return error_object(" ".join(messages) or "Invalid request.", param=param, code=code)


def _error_type(status_code: int) -> tuple[str, str | None]:
    if status_code == 401:
        return "invalid_request_error", "invalid_api_key"
    if status_code == 404:
        return "invalid_request_error", "not_found"
    if status_code == 409:
        return "invalid_request_error", "conflict"
    if status_code == 429:
        return "rate_limit_error", "server_busy"
    if status_code >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _as_error_object(response: JSONResponse) -> JSONResponse:
    try:
        body = json.loads(response.body)
    except (TypeError, ValueError):
        return response
    if not isinstance(body, dict) or "error" in body:
        return response
    detail = body.get("detail", body)
    message = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    type_, code = _error_type(response.status_code)
    headers = {
        key: value
        for key, value in response.headers.items()
        if key.lower() not in ("content-length", "content-type")
    }
    return JSONResponse(
        error_object(message, type_, code=code), status_code=response.status_code, headers=headers
    )


def _for_v1(handler: Callable) -> Callable:
    async def handle(request: Request, error: Exception):
        on_v1 = request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")
        if on_v1 and isinstance(error, RequestValidationError):
            return JSONResponse(validation_error_body(error.errors()), status_code=400)
        response = handler(request, error)
        if inspect.isawaitable(response):
            response = await response
        if on_v1 and isinstance(response, JSONResponse):
            return _as_error_object(response)
        return response

    handle.__wrapped__ = handler
    return handle


def use_error_objects(app: FastAPI) -> None:
    """Make every error of a `/v1` route an OpenAI error object (malformed bodies: 400); the
    other routes keep their answers. Call after the app's other exception handlers are added."""
    for key, handler in list(app.exception_handlers.items()):
        if not hasattr(handler, "__wrapped__"):
            app.exception_handlers[key] = _for_v1(handler)


# Completions -----------------------------------------------------------------------------------


def model_id() -> str:
    a = conversation.assistant()
    if a.loaded:
        info = a.llm.info()
        name = str(info.get("model") or "fcc-rag")
        return f"{name}+{info['adapter_name']}" if info.get("adapter_name") else name
    return "fcc-rag"


def finish_reason(result) -> str:
    """The chain's finish reason as OpenAI's: "length" when the token limit (or the time
    limit) cut the model's text; "stop" otherwise (no model call, an end of its own, or the
    verified mode stopping after enough supported sentences)."""
    return "length" if result.finish_reason in ("length", "timeout") else "stop"


def _usage(result) -> dict:
    prompt = int(result.usage.get("prompt_tokens") or 0)
    completion = int(result.usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extras(result, answer_id: str) -> dict[str, Any]:
    return {
        "sources": conversation.sources_of(result),
        "answer_id": answer_id,
        "abstained": result.abstained,
        "weak_match": result.weak_match,
        "short_answer": result.short_answer,
    }


def _options(body: OpenAIChatRequest) -> conversation.AskOptions:
    return conversation.AskOptions(
        max_new_tokens=body.new_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        answer_mode=body.answer_mode,
        instructions=body.instructions,
    )


class _Chunks:
    """chat.completion.chunk objects of one streamed completion."""

    def __init__(self, include_usage: bool):
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.include_usage = include_usage
        self.model: str | None = None
        self.role_sent = False

    def chunk(self, delta: dict | None, finish: str | None = None, **extra) -> dict:
        self.model = self.model or model_id()
        choices = []
        if delta is not None:
            if not self.role_sent:
                delta = {"role": "assistant", **delta}
                self.role_sent = True
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            payload["usage"] = None
        payload.update(extra)
        return payload


def _stream_error(message: str) -> str:
    return sse(error_object(message, "server_error"))


async def _stream(events: AsyncIterator, include_usage: bool) -> AsyncIterator[str]:
    chunks = _Chunks(include_usage)
    try:
        async for kind, value in events:
            if kind == "retrieved" and not chunks.role_sent:
                yield sse(chunks.chunk({"content": ""}))
            elif kind == "token":
                yield sse(chunks.chunk({"content": value}))
            elif kind == "done" and conversation.failure(value):
                yield _stream_error(conversation.failure(value))
            elif kind == "done":
                answer_id = await asyncio.to_thread(conversation.record, value, "openai")
                yield sse(chunks.chunk({}, finish_reason(value), **_extras(value, answer_id)))
                if include_usage:
                    yield sse(chunks.chunk(None, usage=_usage(value)))
    except Exception as error:
        yield _stream_error(f"{type(error).__name__}: {error}")
    yield sse("[DONE]")


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion (stream=true: chat.completion.chunk SSE)",
    description="Extra response fields: `sources` (the numbered sources the answer cites as "
    "[n]), `answer_id` (for POST /api/feedback) and `abstained`, on the response or on the "
    "chunk with `finish_reason`. Extra request field: `answer_mode`. `stream_options."
    "include_usage`: a last chunk with `usage` and empty `choices`. System messages and "
    "fields this endpoint does not implement (tools, response_format, stop, ...) are refused "
    "with 400 and an OpenAI error object.",
)
async def chat_completions(body: OpenAIChatRequest, request: Request):
    question, history = conversation.split_conversation((m.role, m.content) for m in body.messages)
    options = _options(body)
    if body.stream:  # the queue slot is taken now: a full queue is a 429 before the stream
        return StreamingResponse(
            _stream(conversation.ask_stream(question, history, options), body.include_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    result = await unless_disconnected(request, conversation.ask_async(question, history, options))
    answer_id = await asyncio.to_thread(conversation.record, result, "openai")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id(),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer or "", "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": _usage(result),
        **_extras(result, answer_id),
    }


@router.get("/models", summary="The served model")
def models() -> dict:
    return {
        "object": "list",
        "data": [{"id": model_id(), "object": "model", "created": 0, "owned_by": "local"}],
    }
