"""`POST /api/summarize` on the real server app (Chainlit's FastAPI app with the API), the
session's real model and store, and the services the chat and the CLI share with it."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LINE = re.compile(r"^.+: .+ \[(\d+)\]$")


@pytest.fixture(scope="module")
def settings(state_dir, corpus_collection):
    from core.settings import get_settings

    s = get_settings()
    saved = {name: getattr(s, name) for name in ("data_dir", "collection_name", "api_key")}
    data_dir = state_dir / "summarize-api-data"
    data_dir.mkdir(exist_ok=True)
    s.data_dir, s.collection_name, s.api_key = data_dir, corpus_collection, None
    yield s
    for name, value in saved.items():
        setattr(s, name, value)


@pytest.fixture(scope="module")
def client(settings, chat_model):
    from fastapi.testclient import TestClient

    import app as chat_app
    from services.assistant import get_assistant

    assistant = get_assistant()
    previous = assistant._llm
    assistant._llm = chat_model  # the session's loaded model: no second load
    yield TestClient(chat_app.server)  # no `with`: Chainlit's lifespan would exit the process
    assistant._llm = previous


def test_a_verified_summary_cites_every_line(client):
    response = client.post("/api/summarize", json={"source": "part15_conducted_limits.txt"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "verified" and body["source"] == "part15_conducted_limits.txt"
    numbers = [s["n"] for s in body["sources"]]
    assert numbers == list(range(1, len(numbers) + 1))
    for line in body["summary"].splitlines():
        match = LINE.match(line)
        assert match and 1 <= int(match.group(1)) <= len(numbers), line
    assert any(s["pinpoint"].startswith("§ 15.107(") for s in body["sources"])
    assert all(s["cited"] and s["text"] and s["context"] for s in body["sources"])
    assert all(s["chunk_index"] is not None for s in body["sources"])
    assert {"extract_s", "generate_s", "verify_s", "total_s"} <= set(body["timings"])
    assert body["calls"] == 1 and isinstance(body["dropped"], list)
    assert all({"text", "cites", "kind", "pinpoint"} <= set(s) for s in body["sentences"])


def test_extractive_mode_calls_no_model(client):
    quotes = client.post(
        "/api/summarize", json={"source": "part15_labelling.html", "mode": "extractive"}
    )
    assert quotes.status_code == 200 and quotes.json()["calls"] == 0
    assert quotes.json()["fallback"] and '"' in quotes.json()["summary"]


def test_unknown_documents_roots_and_modes(client, tmp_path):
    missing = client.post("/api/summarize", json={"source": "no_such_file.pdf"})
    assert missing.status_code == 404 and "GET /api/documents" in missing.json()["detail"]
    bad = client.post("/api/summarize", json={"source": "x.txt", "mode": "fancy"})
    assert bad.status_code == 422
    assert client.post("/api/summarize", json={"source": " "}).status_code == 422
    assert client.post("/api/summarize", json={"source": "x", "extra": 1}).status_code == 422

    # One name under two roots: 409 listing them; with `root` the summary of that copy.
    from core.settings import get_settings
    from ingest.pipeline import delete_source, ingest_paths

    collection = get_settings().collection_name
    roots = []
    for name, limit in (("first", "10 W"), ("second", "20 W")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "twin_note.txt").write_text(
            f"§ 99.1 Twin rule.\n\n(a) The transmitter power must not exceed {limit}.\n"
        )
        ingest_paths([folder], collection=collection, progress=False)
        roots.append(folder)
    try:
        ambiguous = client.post(
            "/api/summarize", json={"source": "twin_note.txt", "mode": "extractive"}
        )
        assert ambiguous.status_code == 409
        assert len(ambiguous.json()["roots"]) == 2
        chosen = client.post(
            "/api/summarize",
            json={"source": "twin_note.txt", "root": str(roots[1]), "mode": "extractive"},
        )
        assert chosen.status_code == 200, chosen.text
        assert "20 W" in chosen.json()["summary"] and "10 W" not in chosen.json()["summary"]
        elsewhere = client.post(
            "/api/summarize",
            json={"source": "twin_note.txt", "root": str(tmp_path), "mode": "extractive"},
        )
        assert elsewhere.status_code == 404
    finally:
        delete_source("twin_note.txt", collection=collection)


def test_the_chat_action_summarizes_an_answers_sources(client, settings):
    """What the chat's "Summarize sources" calls: an answer's passages -> the chunks they
    were cut from -> a verified summary whose sources render like an answer's."""
    from services import conversation, summaries
    from ui.render import SUMMARY_SCORE_NOTE, source_card, summary_message, summary_verification

    answer = conversation.ask(  # quotes only: the summary's own model call is what is tested
        "What are the conducted emission limits for Class A devices?",
        options=conversation.AskOptions(answer_mode="extractive"),
    )
    summary = summaries.summarize_answer_sources(answer.sources, answer.standalone_question)
    assert summary.summary and summary.sources
    chunk_ids = {s.chunk_id for s in answer.sources}
    assert {s["chunk_id"] for s in summary.sources} <= chunk_ids
    records = summary.source_records()
    assert [r.n for r in records] == [s["n"] for s in summary.sources]
    text = summary_message(summary)
    assert text.startswith("**Summary of the sources**") and "**Sources**" in text
    assert "[1]" in text and records[0].source in text
    assert "quoted" in summary_verification(summary)
    # Each [n] opens a side card like an answer's: pinpoint, file, the quote, its chunk.
    card = source_card(records[0], "hybrid", SUMMARY_SCORE_NOTE, cited_in="summary")
    assert card.startswith(f"**[1] {records[0].pinpoint}**") and "Cited in the summary" in card
    assert "In context:" in card and "**" in card.split("In context:")[1]
