"""The Chainlit chat's handlers: thin, like the REST routes. Questions go through
`services.conversation`, uploads through `services.uploads`, adapters through the
Assistant; `ui.render` draws the results.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import chainlit as cl
from chainlit.data.base import BaseDataLayer
from chainlit.input_widget import Select, Slider
from chainlit.utils import utc_now

from core.settings import get_settings
from services import conversation, documents, summaries, uploads
from services.admission import ServerBusyError
from ui import welcome
from ui.auth import ChatDataLayer, install_chat_login
from ui.render import (
    answer_actions,
    describe_report,
    document_file,
    retrieval_summary,
    source_elements,
    sources_footer,
    summary_elements,
    summary_message,
    summary_verification,
    verification_summary,
)

log = logging.getLogger("ui")

NO_ADAPTER = "none"
HISTORY_TURNS = 6
MODES = ["hybrid", "dense", "bm25"]
ANSWER_MODES = ["verified", "extractive", "raw"]
ICON = "/public/icon.png"  # the logo's badge (public/logo_*.png: with the name)


# The chat asks for API_KEY (or a CHAT_USERS login) when API_KEY is set: ui/auth.py.
install_chat_login()


@cl.data_layer
def feedback_layer() -> BaseDataLayer:
    return ChatDataLayer()  # the feedback layer, knowing the logged-in users


# Chat settings -----------------------------------------------------------------------------


def adapter_choices() -> dict[str, str | None]:
    choices: dict[str, str | None] = {NO_ADAPTER: None}
    for adapter in conversation.assistant().available_adapters():
        choices[adapter["name"]] = str(adapter["path"])
    return choices


def chat_settings(adapters: dict[str, str | None], active: str | None) -> cl.ChatSettings:
    s = get_settings()
    names = list(adapters)
    current = next(
        (n for n, p in adapters.items() if p and active and Path(p) == Path(active)), NO_ADAPTER
    )
    return cl.ChatSettings(
        [
            Slider(
                id="temperature",
                label="Temperature",
                initial=s.temperature,
                min=0,
                max=1.5,
                step=0.05,
            ),
            Slider(id="top_p", label="Top-p", initial=s.top_p, min=0.05, max=1, step=0.05),
            Slider(
                id="max_new_tokens",
                label="Max new tokens",
                initial=s.answer_max_tokens,
                min=16,
                max=1024,
                step=16,
            ),
            Slider(
                id="k",
                label="Sources to retrieve (k)",
                initial=s.retrieval_k,
                min=1,
                max=12,
                step=1,
            ),
            Select(
                id="mode",
                label="Retrieval mode",
                values=MODES,
                initial_index=MODES.index(s.retrieval_mode),
            ),
            Select(
                id="answer_mode",
                label="Answer mode (verified: only sentences a cited passage supports; "
                "extractive: verbatim quotes, no model; raw: the model's text unverified)",
                values=ANSWER_MODES,
                initial_index=ANSWER_MODES.index(s.answer_mode),
            ),
            Select(
                id="adapter",
                label="LoRA adapter (applies to the whole server)",
                values=names,
                initial_index=names.index(current),
            ),
        ]
    )


def options_from(values: dict[str, Any]) -> conversation.AskOptions:
    return conversation.AskOptions(
        k=int(values["k"]) if values.get("k") else None,
        mode=values.get("mode"),
        max_new_tokens=int(values["max_new_tokens"]) if values.get("max_new_tokens") else None,
        temperature=values.get("temperature"),
        top_p=values.get("top_p"),
        answer_mode=values.get("answer_mode"),
    )


# Welcome ---------------------------------------------------------------------------------
# Chainlit's welcome screen (an empty thread) shows the chat profile's icon and description
# above the message box and the starters below it; a message sent at chat start would hide
# it all. So the welcome is the description of the one profile (no profile picker shows for
# one). Both are asked for on every page load: ui.welcome keeps them cheap.


# Chainlit 2.12 also calls set_chat_profiles synchronously once per session (looking for
# config_overrides, none here); inside the running loop that fails quietly and leaves the
# coroutine unawaited: a RuntimeWarning per session and nothing else.
warnings.filterwarnings(
    "ignore", message="coroutine 'chat_profiles' was never awaited", category=RuntimeWarning
)


@cl.set_chat_profiles
async def chat_profiles(user=None, language=None) -> list[cl.ChatProfile]:
    name = cl.config.config.ui.name
    text = await asyncio.to_thread(welcome.welcome_markdown, name)
    return [cl.ChatProfile(name=name, markdown_description=text, icon=ICON, default=True)]


@cl.set_starters
async def starters(user=None, language=None) -> list[cl.Starter]:
    indexed = await asyncio.to_thread(welcome.corpus)
    return [cl.Starter(label=s.label, message=s.message) for s in indexed.starters]


@cl.on_chat_start
async def start() -> None:
    adapters = await asyncio.to_thread(adapter_choices)
    a = conversation.assistant()
    # Not loaded yet: the adapter it will load with (LOCAL_ADAPTER_PATH, the shipped one).
    active = a.llm.info().get("adapter") if a.loaded else a.settings.local_adapter_path
    values = await chat_settings(adapters, active).send()
    cl.user_session.set("settings", dict(values))  # a copy: Chainlit updates its own dict in place
    cl.user_session.set("adapters", adapters)
    cl.user_session.set("history", [])
    cl.user_session.set("answers", {})


@cl.on_settings_update
async def settings_changed(values: dict[str, Any]) -> None:
    previous = cl.user_session.get("settings") or {}
    cl.user_session.set("settings", dict(values))  # a copy: Chainlit updates its own dict in place
    if values.get("adapter") != previous.get("adapter"):
        path = (cl.user_session.get("adapters") or {}).get(values.get("adapter"))
        status = await asyncio.to_thread(conversation.assistant().use_adapter, path)
        warning = (status or {}).get("adapter_warning")
        await cl.Message(
            content=f"Adapter: **{values.get('adapter')}** (base model {'only' if not path else '+ LoRA'})."
            + (f"\n\n⚠️ {warning}" if warning else "")
        ).send()


# Messages ----------------------------------------------------------------------------------


@cl.on_message
async def on_message(message: cl.Message) -> None:
    files = [e for e in (message.elements or []) if getattr(e, "path", None)]
    if files:
        await ingest_uploads(files)
    if message.content.strip():
        await answer(message.content.strip())


async def answer(question: str) -> None:
    values = cl.user_session.get("settings") or {}
    options = options_from(values)
    history: list[tuple[str, str]] = cl.user_session.get("history") or []
    mode = options.mode or get_settings().retrieval_mode
    k = options.k or get_settings().retrieval_k
    try:  # refused before anything is shown: a full answer queue, options the model cannot serve
        events = conversation.ask_stream(question, history, options)
    except (ServerBusyError, conversation.InvalidAskError) as error:
        await cl.Message(content=f"⚠️ {error}").send()
        return
    # A Step built outside `async with` has no parent: Chainlit would add it after the run
    # (the answer included), i.e. below the answer. Under the run like the reply, it is
    # shown in the order sent: the retrieval first.
    parent = cl.context.current_step
    step = cl.Step(
        name="Retrieval",
        type="retrieval",
        show_input="text",
        parent_id=parent.id if parent else None,
    )
    step.input = f"Question: {question}\nMode: {mode}, k = {k}"
    step.start = utc_now()
    await step.send()
    reply = cl.Message(content="")  # created after the step, so it shows below it
    result, error = None, None
    try:
        async for kind, value in events:
            if kind == "retrieved":
                step.output = retrieval_summary(value) if value else "Nothing relevant enough."
                step.end = utc_now()
                await step.update()
            elif kind == "token":
                await reply.stream_token(value)
            elif kind == "done":
                result = value
    except Exception as raised:  # the model failed to load, the store went away: say so
        log.exception("Answering %r failed", question)
        error = f"{type(raised).__name__}: {raised}"
    if error or result is None or conversation.failure(result):
        why = error or (conversation.failure(result) if result else "no result")
        reply.content = f"Sorry, I could not answer: {why}"
        await reply.send()
        return
    step.input = f"Standalone question: {result.standalone_question}\nMode: {mode}, k = {k}"
    step.output = retrieval_summary(result.sources, result.searched)
    step.end = step.end or utc_now()
    await step.update()
    checked = verification_summary(result)
    if checked:  # the draft's unsupported sentences: a details view, never answer text
        async with cl.Step(name="Verification", type="tool", parent_id=step.id) as verify_step:
            verify_step.output = checked
    reply.content = (result.answer or "") + await asyncio.to_thread(sources_footer, result.sources)
    reply.elements = await asyncio.to_thread(source_elements, result.sources, mode)
    reply.actions = answer_actions(reply.id, result.sources)
    await reply.send()
    # Chainlit attaches 👍/👎 to the run (the on_message step), so the answer is kept under its id.
    run = cl.context.current_run
    await asyncio.to_thread(conversation.record, result, "chat", run.id if run else reply.id)
    cl.user_session.set("history", [*history, (question, result.answer or "")][-HISTORY_TURNS:])
    answers = cl.user_session.get("answers") or {}
    answers[reply.id] = result
    cl.user_session.set("answers", answers)


async def ingest_uploads(files: list[cl.Element]) -> None:
    progress = cl.Message(content=f"Adding {len(files)} document(s) to the collection…")
    await progress.send()
    lines: list[str] = []
    async with cl.Step(name="Ingest", type="tool") as step:
        step.input = "\n".join(f.name for f in files)
        for index, element in enumerate(files, start=1):
            progress.content = f"Ingesting {index}/{len(files)}: {element.name}…\n\n" + "\n".join(
                lines
            )
            await progress.update()
            try:
                path = await asyncio.to_thread(
                    uploads.store_upload, element.name, Path(element.path)
                )
                report = await asyncio.to_thread(uploads.ingest_files, [path])
            except uploads.UploadRejectedError as error:
                lines.append(f"✗ {error}")
                continue
            except Exception as error:  # one bad file never stops the others
                log.exception("Ingesting %s failed", element.name)
                lines.append(f"✗ {element.name}: {type(error).__name__}: {error}")
                continue
            lines.append(f"✓ {element.name}: {describe_report(report)}")
        step.output = "\n".join(lines)
    progress.content = "Upload finished:\n\n" + "\n".join(f"- {line}" for line in lines)
    await progress.update()


@cl.action_callback("summarize_sources")
async def summarize_sources(action: cl.Action) -> None:
    result = (cl.user_session.get("answers") or {}).get(action.payload.get("message_id"))
    if result is None or not result.sources:
        await cl.Message(content="No sources to summarize for that answer.").send()
        return
    focus = result.standalone_question or result.question
    async with cl.Step(name="Summarize sources", type="llm") as step:
        step.input = f"{len(result.sources)} passages of: {focus}"
        try:  # the chunks the passages were cut from: provisions quoted, verified, cited [n]
            summary = await asyncio.to_thread(
                summaries.summarize_answer_sources, result.sources, focus
            )
        except ServerBusyError as error:
            step.output = str(error)
            await cl.Message(content=f"⚠️ {error}").send()
            return
        step.output = summary_verification(summary)
    elements = await asyncio.to_thread(summary_elements, summary)
    content = await asyncio.to_thread(summary_message, summary)
    await cl.Message(content=content, elements=elements).send()


@cl.action_callback("show_document")
async def show_document(action: cl.Action) -> None:
    source = action.payload.get("source", "")
    chunks = await asyncio.to_thread(documents.document_chunks, source)
    if not chunks:
        await cl.Message(content=f"`{source}` is no longer in the collection.").send()
        return
    text = "\n\n".join(chunk["text"] for chunk in chunks)
    name = f"Full text: {source}"
    elements: list[cl.Element] = [cl.Text(name=name, content=text, display="side")]
    path = await asyncio.to_thread(document_file, source)
    if path is not None and path.suffix.lower() == ".pdf":
        elements.append(cl.Pdf(name=f"PDF: {source}", path=str(path), page=1, display="side"))
    names = " · ".join(e.name for e in elements)
    await cl.Message(content=f"{names} ({len(chunks)} chunks)", elements=elements).send()


# Server ------------------------------------------------------------------------------------


def _warm_up() -> None:
    """Load the model and open the collection in the background: the first answer is faster."""
    try:
        conversation.rag_chain()
        log.info("Model ready: %s", conversation.model_info())
    except Exception:
        log.exception("Warm-up failed; the first question will retry")


@cl.on_app_startup
async def on_startup() -> None:
    s = get_settings()
    host = "localhost" if s.host in ("0.0.0.0", "127.0.0.1", "::") else s.host
    log.info("Chat UI:  http://%s:%d/", host, s.port)
    log.info("API docs: http://%s:%d/docs  (OpenAPI: /openapi.json)", host, s.port)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
