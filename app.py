"""The Chainlit chat and the REST API in one server: `python -m app` (what `make run` runs).

The chat handlers below are thin: questions go through `api.conversation` (which calls
`chains.service.get_assistant()`), uploads through `api.uploads` (which calls
`ingest.pipeline`), exactly like the REST routes in `api/routes/`. The server holds the
embedded Qdrant store, so uploads and `/api/ingest` write through this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, get_settings

# Chainlit reads .chainlit/config.toml and chainlit.md from its app root (default: the cwd).
os.environ.setdefault("CHAINLIT_APP_ROOT", str(PROJECT_ROOT))

import chainlit as cl  # noqa: E402
from chainlit.data.base import BaseDataLayer  # noqa: E402
from chainlit.input_widget import Select, Slider  # noqa: E402
from chainlit.server import app as server  # noqa: E402
from chainlit.types import Feedback, PageInfo, PaginatedResponse  # noqa: E402
from chainlit.utils import utc_now  # noqa: E402

from api import conversation, uploads  # noqa: E402
from api.feedback import UnknownAnswerError, get_feedback_store  # noqa: E402
from api.server import install  # noqa: E402

log = logging.getLogger("app")

install(server)

NO_ADAPTER = "none"
HISTORY_TURNS = 6
MODES = ["hybrid", "dense", "bm25"]


# Feedback: Chainlit shows 👍/👎 (with a comment box) only when a data layer exists. This
# one stores just the feedback (the answers are recorded when they are given).
class FeedbackDataLayer(BaseDataLayer):
    async def upsert_feedback(self, feedback: Feedback) -> str:
        try:
            return await asyncio.to_thread(
                get_feedback_store().rate,
                feedback.forId,
                int(feedback.value),
                feedback.comment,
                feedback.id,
            )
        except UnknownAnswerError:
            raise ValueError("Only answers to questions can be rated.") from None

    async def delete_feedback(self, feedback_id: str) -> bool:
        return await asyncio.to_thread(get_feedback_store().delete_feedback, feedback_id)

    # Nothing else is persisted: no users, threads or steps.
    async def get_user(self, identifier):
        return None

    async def create_user(self, user):
        return None

    async def create_element(self, element):
        return None

    async def get_element(self, thread_id, element_id):
        return None

    async def delete_element(self, element_id, thread_id=None):
        return None

    async def create_step(self, step_dict):
        return None

    async def update_step(self, step_dict):
        return None

    async def delete_step(self, step_id):
        return None

    async def get_thread_author(self, thread_id):
        return ""

    async def delete_thread(self, thread_id):
        return None

    async def list_threads(self, pagination, filters):
        return PaginatedResponse(
            pageInfo=PageInfo(hasNextPage=False, startCursor=None, endCursor=None), data=[]
        )

    async def get_thread(self, thread_id):
        return None

    async def update_thread(self, thread_id, name=None, user_id=None, metadata=None, tags=None):
        return None

    async def build_debug_url(self) -> str:
        return ""

    async def close(self) -> None:
        return None

    async def get_favorite_steps(self, user_id):
        return []


@cl.data_layer
def feedback_layer() -> BaseDataLayer:
    return FeedbackDataLayer()


# Presentation ------------------------------------------------------------------------------


def source_title(source) -> str:
    parts = [source.source]
    if source.page:
        parts.append(f"p. {source.page}")
    if source.section:
        parts.append(f"§ {source.section}")
    return " · ".join(parts)


SCORE_KINDS = {
    "dense": "dense: cosine similarity",
    "hybrid": "hybrid: reciprocal-rank fusion",
    "bm25": "keyword: BM25",
}


def source_card(source, mode: str) -> str:
    score = f"{source.score:.3f}" if source.score is not None else "n/a"
    lines = [f"**{source.source}**", ""]
    if source.page:
        lines.append(f"- Page: {source.page}")
    if source.section:
        lines.append(f"- CFR section: § {source.section}")
    if source.heading:
        lines.append(f"- Heading: {source.heading}")
    lines.append(f"- Score: {score} ({SCORE_KINDS.get(mode, mode)})")
    lines.append("- Cited in the answer" if source.cited else "- Retrieved, not cited")
    lines += ["", "---", "", source.text]
    return "\n".join(lines)


def pdf_name(source) -> str:
    return f"{source.source} (p. {source.page})"


def document_file(source: str) -> Path | None:
    """Where an indexed document lives on disk (its ingest root + source), if it still does."""
    from ingest.pipeline import document_text

    chunks = document_text(source)
    roots = [c["metadata"].get("root") for c in chunks[:1] if c.get("metadata")]
    settings = get_settings()
    for root in [*roots, settings.uploads_path, settings.corpus_path]:
        if root and (Path(root) / source).is_file():
            return Path(root) / source
    return None


def source_elements(sources, mode: str) -> list[cl.Element]:
    elements: list[cl.Element] = [
        cl.Text(name=f"[{s.n}]", content=source_card(s, mode), display="side") for s in sources
    ]
    seen: set[str] = set()
    for s in sources:
        if not s.source.lower().endswith(".pdf") or not s.page or pdf_name(s) in seen:
            continue
        path = document_file(s.source)
        if path is not None:
            seen.add(pdf_name(s))
            elements.append(cl.Pdf(name=pdf_name(s), path=str(path), page=s.page, display="side"))
    return elements


def sources_footer(sources) -> str:
    if not sources:
        return ""
    lines = []
    for s in sources:
        # "file (p. N)" is also the name of the PDF element: it links to the page.
        title = pdf_name(s) if s.page else s.source
        if s.section:
            title += f" · § {s.section}"
        lines.append(f"[{s.n}] {title}" + ("" if s.cited else " (not cited)"))
    return "\n\n**Sources**  \n" + "  \n".join(lines)


def answer_actions(message_id: str, sources) -> list[cl.Action]:
    if not sources:
        return []
    actions = [
        cl.Action(
            name="summarize_sources",
            payload={"message_id": message_id},
            label="Summarize sources",
            icon="list",
        )
    ]
    for name in dict.fromkeys(s.source for s in sources):
        actions.append(
            cl.Action(
                name="show_document",
                payload={"source": name},
                label=f"Show full document: {name}",
                icon="file-text",
            )
        )
    return actions


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
                initial=s.max_new_tokens,
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
    )


@cl.on_chat_start
async def start() -> None:
    adapters = await asyncio.to_thread(adapter_choices)
    a = conversation.assistant()
    active = a.llm.info().get("adapter") if a.loaded else None
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
        await asyncio.to_thread(conversation.assistant().use_adapter, path)
        await cl.Message(
            content=f"Adapter: **{values.get('adapter')}** (base model {'only' if not path else '+ LoRA'})."
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
    step = cl.Step(name="Retrieval", type="retrieval", show_input="text")
    step.input = f"Question: {question}\nMode: {mode}, k = {k}"
    step.start = utc_now()
    await step.send()
    reply = cl.Message(content="")  # created after the step, so it shows below it
    result = None
    async for kind, value in conversation.ask_stream(question, history, options):
        if kind == "retrieved":
            step.output = (
                "\n".join(
                    f"[{s.n}] {source_title(s)} — score {s.score:.3f}"
                    if s.score is not None
                    else f"[{s.n}] {source_title(s)}"
                    for s in value
                )
                or "Nothing found."
            )
            step.end = utc_now()
            await step.update()
        elif kind == "token":
            await reply.stream_token(value)
        elif kind == "done":
            result = value
    if result is None or conversation.failure(result):
        reply.content = (
            f"Sorry, I could not answer: {conversation.failure(result) if result else 'no result'}"
        )
        await reply.send()
        return
    step.input = f"Standalone question: {result.standalone_question}\nMode: {mode}, k = {k}"
    step.end = step.end or utc_now()
    await step.update()
    reply.content = (result.answer or "") + sources_footer(result.sources)
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


def describe_report(report) -> str:
    if report.skipped:
        return "skipped: " + "; ".join(item["reason"] for item in report.skipped)
    if report.files_unchanged and not report.chunks_written:
        return "already indexed, unchanged"
    chunks = report.chunks_written
    return f"{chunks} chunk{'s' if chunks != 1 else ''} indexed in {report.seconds:.2f} s"


# Actions -----------------------------------------------------------------------------------


@cl.action_callback("summarize_sources")
async def summarize_sources(action: cl.Action) -> None:
    result = (cl.user_session.get("answers") or {}).get(action.payload.get("message_id"))
    if result is None or not result.sources:
        await cl.Message(content="No sources to summarize for that answer.").send()
        return
    async with cl.Step(name="Summarize sources", type="llm"):
        summary = await asyncio.to_thread(
            conversation.assistant().summarizer().summarize_chunks, result.sources
        )
    await cl.Message(content=f"**Summary of the sources**\n\n{summary.summary}").send()


@cl.action_callback("show_document")
async def show_document(action: cl.Action) -> None:
    from ingest.pipeline import document_text

    source = action.payload.get("source", "")
    chunks = await asyncio.to_thread(document_text, source)
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


def main() -> int:
    import uvicorn
    from chainlit.config import config

    from core.store import StoreUnavailableError, get_client

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = get_settings()
    try:
        get_client(s)  # the embedded store allows one process per folder: this one holds it
    except StoreUnavailableError as error:
        log.error("%s", error)
        return 1
    config.run.host, config.run.port, config.run.headless = s.host, s.port, True
    uvicorn_config = uvicorn.Config(
        server, host=s.host, port=s.port, log_level="warning", ws="auto"
    )
    asyncio.run(uvicorn.Server(uvicorn_config).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
