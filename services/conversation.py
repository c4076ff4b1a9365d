"""One question-answering path for every caller: the Chainlit chat, `/api/chat`,
`/api/chat/qlora/chat` and `/v1/chat/completions` all go through these functions, which
call `services.assistant.get_assistant()` (the RAG chain itself lives in `chains/`).

Every answer holds a slot of `services.admission.answer_slots` from the call until it ends:
`ask_stream` takes it when called (so a full queue is a `ServerBusyError` before any
response has started), not when first iterated.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.admission import Slot, answer_slots
from services.feedback import get_feedback_store


class ModelNotLoadedError(RuntimeError):
    """The QLoRA service has no model loaded (after unload)."""


class AnswerFailedError(RuntimeError):
    """The chain could not answer (store or model failure); the message says why."""


class InvalidAskError(ValueError):
    """The request's options cannot be served (a 422 in the API)."""


# What a RAG prompt needs besides the answer: the rules, the question and at least a few
# passages (the served prompt with 4 passages is 700-900 SmolLM2 tokens).
MIN_PROMPT_TOKENS = 512


@dataclass
class AskOptions:
    k: int | None = None
    mode: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    filters: dict | None = None
    collection: str | None = None
    answer_mode: str | None = None  # verified | extractive | raw (default ANSWER_MODE)
    instructions: str | None = None  # a caller's system message, before the RAG rules
    extra: dict[str, Any] = field(default_factory=dict)

    def generation(self) -> dict[str, Any]:
        values = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            **self.extra,
        }
        return {key: value for key, value in values.items() if value is not None}

    def rag_kwargs(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "mode": self.mode,
            "filters": self.filters,
            "answer_mode": self.answer_mode,
            "instructions": self.instructions,
            **self.generation(),
        }


def context_window() -> int:
    """The loaded model's context window, else CONTEXT_WINDOW (the most any model gets)."""
    a = assistant()
    if a.loaded:
        return a.llm.context_window
    return a.settings.context_window


def check_options(options: AskOptions) -> None:
    """Refuse a max_new_tokens that leaves the prompt no room in the context window."""
    wanted = options.max_new_tokens
    if wanted is None:
        return
    window = context_window()
    most = window - MIN_PROMPT_TOKENS
    if wanted > most:
        raise InvalidAskError(
            f"max_tokens {wanted} leaves no room for the question and its sources in the "
            f"{window}-token context window: use at most {most} (answers are short; the "
            "default is ANSWER_MAX_TOKENS)."
        )


def split_conversation(messages: Iterable[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """(role, content) messages -> (question, history as (user, assistant) pairs).

    The last user message is the question; earlier user/assistant turns pair up in order
    (a user turn without an answer gets an empty one); system messages are ignored.
    """
    turns = [(role, content) for role, content in messages if role in ("user", "assistant")]
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise ValueError("the last message must be a non-empty question from the user")
    question = turns[-1][1].strip()
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for role, content in turns[:-1]:
        if role == "user":
            if pending is not None:
                history.append((pending, ""))
            pending = content
        elif pending is not None:
            history.append((pending, content))
            pending = None
    if pending is not None:
        history.append((pending, ""))
    return question, history


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def assistant():
    from services.assistant import get_assistant

    return get_assistant()


def model_info() -> dict[str, Any]:
    a = assistant()
    if not a.loaded:
        return {"loaded": False}
    info = dict(a.llm.info())
    info["loaded"] = True
    return info


def rag_chain(collection: str | None = None, require_loaded: bool = False):
    """The RAG chain (loads the model on first use unless `require_loaded`)."""
    a = assistant()
    if require_loaded and not a.loaded:
        raise ModelNotLoadedError(
            "No model is loaded: POST /api/chat/qlora/load (or load_trained) first."
        )
    return a.rag(collection)


def ask(
    question: str,
    history: list[tuple[str, str]] | None = None,
    options: AskOptions | None = None,
    require_loaded: bool = False,
):
    """Answer synchronously; returns the chain's RagResult."""
    options = options or AskOptions()
    check_options(options)
    with answer_slots.acquire():
        chain = rag_chain(options.collection, require_loaded)
        result = chain.invoke(question, history=history or None, **options.rag_kwargs())
    if failure(result):
        raise AnswerFailedError(failure(result))
    return result


def failure(result) -> str | None:
    """Why the chain gave no answer, or None (an abstention is an answer)."""
    return result.error if result.error and not result.answer else None


def ask_stream(
    question: str,
    history: list[tuple[str, str]] | None = None,
    options: AskOptions | None = None,
    require_loaded: bool = False,
) -> AsyncIterator[tuple[str, Any]]:
    """The chain's events: ("retrieved", sources), ("token", text), ("done", RagResult).

    Raises ServerBusyError at once when MAX_PENDING_ANSWERS answers are pending. The slot
    is given back when the stream ends, fails, is closed, or is dropped unread.
    """
    options = options or AskOptions()
    check_options(options)
    slot = answer_slots.acquire()
    events = _events(slot, question, history, options, require_loaded)
    weakref.finalize(events, slot.release)
    return events


async def _events(
    slot: Slot,
    question: str,
    history: list[tuple[str, str]] | None,
    options: AskOptions,
    require_loaded: bool,
) -> AsyncIterator[tuple[str, Any]]:
    with slot:
        # Loading the model can take seconds: never on the event loop.
        chain = await asyncio.to_thread(rag_chain, options.collection, require_loaded)
        stream = chain.astream(question, history=history or None, **options.rag_kwargs())
        async for event in stream:
            yield event


async def ask_async(
    question: str,
    history: list[tuple[str, str]] | None = None,
    options: AskOptions | None = None,
    require_loaded: bool = False,
):
    """`ask` for async callers: the answer is generated on the model's worker thread and no
    thread waits for it, so hundreds can wait at once. Cancelling the awaiting task (a
    client that went away) stops the generation, queued or running."""
    result = None
    async for kind, value in ask_stream(question, history, options, require_loaded):
        if kind == "done":
            result = value
    if result is None or failure(result):
        raise AnswerFailedError(failure(result) if result else "The chain returned no answer.")
    return result


def sources_of(result) -> list[dict]:
    return [source.to_dict() for source in result.sources]


def record(result, channel: str, answer_id: str | None = None) -> str:
    """Keep the answer for feedback and the fine-tuning export; return its id."""
    return get_feedback_store().record_answer(
        question=result.question,
        answer=result.answer or "",
        sources=sources_of(result),
        model_info=model_info(),
        answer_id=answer_id,
        channel=channel,
        # The exact prompt the model saw: the export trains on the served format.
        messages=getattr(result, "messages", None),
    )


def response_payload(result, answer_id: str) -> dict[str, Any]:
    return {
        "id": answer_id,
        "answer": result.answer or "",
        "sources": sources_of(result),
        "abstained": result.abstained,
        "timestamp": timestamp(),
        "model_info": model_info(),
        "standalone_question": result.standalone_question,
        "timings": result.timings,
        "usage": result.usage,
        "answer_mode": result.answer_mode,
        "dropped": result.dropped,
        "fallback": result.fallback,
        "weak_match": result.weak_match,
        "short_answer": result.short_answer,
        "searched": result.searched,
    }
