"""The REST API, in process, on the real server app (Chainlit's FastAPI app with the API
installed), the real model (loaded once for the session), a real embedded Qdrant store
and real training. State (feedback DB, uploads, checkpoints) goes to a temp data dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from chains.rag import CONDENSE_MAX_TOKENS
from tests.conftest import SAMPLE_CORPUS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def settings(state_dir, corpus_collection):
    """The process settings pointed at a temp data dir and the test collection."""
    from core.settings import get_settings

    s = get_settings()
    saved = {
        name: getattr(s, name)
        for name in ("data_dir", "collection_name", "api_key", "max_upload_mb")
    }
    data_dir = state_dir / "api-data"
    data_dir.mkdir(exist_ok=True)
    s.data_dir, s.collection_name, s.api_key = data_dir, corpus_collection, None
    yield s
    for name, value in saved.items():
        setattr(s, name, value)


@pytest.fixture(scope="module")
def client(settings):
    from fastapi.testclient import TestClient

    import app as chat_app

    # No `with`: Chainlit's lifespan ends the process on shutdown (os._exit).
    return TestClient(chat_app.server)


@pytest.fixture
def api_key(settings):
    settings.api_key = "s3cret"
    yield "s3cret"
    settings.api_key = None


# Pure pieces ---------------------------------------------------------------------------------


def test_split_conversation_pairs_history_and_takes_the_last_question():
    from services.conversation import split_conversation

    question, history = split_conversation(
        [
            ("system", "be brief"),
            ("user", "What is § 15.109?"),
            ("assistant", "Radiated limits [1]."),
            ("user", "And for Class A?"),
        ]
    )
    assert question == "And for Class A?"
    assert history == [("What is § 15.109?", "Radiated limits [1].")]
    with pytest.raises(ValueError):
        split_conversation([("user", "hi"), ("assistant", "hello")])


def test_paths_outside_the_allowed_roots_are_refused(settings):
    from services.paths import PathNotAllowedError, resolve_inside

    inside = resolve_inside("run-1/final_model")
    assert inside == (settings.checkpoints_path / "run-1" / "final_model").resolve()
    for elsewhere_in_data in ("corpus", "uploads", "adapters", "x"):  # only checkpoints
        with pytest.raises(PathNotAllowedError):
            resolve_inside(settings.data_dir / elsewhere_in_data)
    for bad in ("../../etc/passwd", "/etc", "run/../../../..", ""):
        with pytest.raises(PathNotAllowedError):
            resolve_inside(bad)


def test_train_request_is_the_train_config_fields_a_request_may_set():
    """The API's training request is generated from finetune's TrainConfig: the same fields
    (but the server-controlled ones), defaults, choices and bounds, so they cannot drift."""
    import dataclasses

    from pydantic import ValidationError

    from api.schemas import QLoRAStatus, TrainRequest
    from finetune.config import TrainConfig
    from services.jobs import SERVER_CONTROLLED

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(fields) >= SERVER_CONTROLLED
    assert set(TrainRequest.model_fields) == (set(fields) - SERVER_CONTROLLED) | {"conversations"}
    assert {"lora_r", "lora_alpha", "lora_dropout", "target_modules", "output_dir"} <= set(
        TrainRequest.model_fields
    )
    defaults = TrainConfig()
    request = TrainRequest(conversations=[{"prompt": "q", "response": "a"}])
    for name in set(TrainRequest.model_fields) - {"conversations"}:
        assert getattr(request, name) == getattr(defaults, name), name
        if name not in ("output_dir", "run_name", "base_model"):  # API-specific descriptions
            assert TrainRequest.model_fields[name].description == fields[name].metadata["help"]
    schema = TrainRequest.model_json_schema()["properties"]
    assert schema["lora_dropout"]["exclusiveMaximum"] == 1
    assert schema["preset"]["enum"] == fields["preset"].metadata["choices"]
    for bad in ({"num_train_epochs": 1}, {"lora_dropout": 1.5}, {"data": "/etc/passwd"}):
        with pytest.raises(ValidationError):
            TrainRequest(conversations=[{"prompt": "q", "response": "a"}], **bad)
    assert "lora_defaults" not in QLoRAStatus.model_fields


def test_feedback_store_exports_what_finetune_reads(tmp_path):
    from finetune.data import load_examples
    from services.feedback import FeedbackStore, UnknownAnswerError, main

    store = FeedbackStore(tmp_path / "fb.sqlite3")
    sources = [{"n": 1, "source": "a.md", "text": "t"}]
    good = store.record_answer("Q1?", "A1 [1].", sources)
    bad = store.record_answer("Q2?", "wrong", sources)
    unrated = store.record_answer("Q3?", "A3", sources)
    corrected = store.record_answer("Q4?", "wrong too", sources)
    store.rate(good, 1)
    store.rate(bad, 0)
    feedback_id = store.rate(corrected, 1)
    assert store.rate(corrected, 0, "The right answer.") == feedback_id  # one feedback per answer
    with pytest.raises(UnknownAnswerError):
        store.rate("nope", 1)
    assert store.stats() == {
        "answers": 4,
        "rated": 3,
        "thumbs_up": 1,
        "thumbs_down": 2,
        "corrected": 1,
        "trainable": 2,
        "with_messages": 0,  # recorded without the messages the model saw
    }
    out = tmp_path / "fb.jsonl"
    assert main(["--db", str(tmp_path / "fb.sqlite3"), "export", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question"], r["messages"][-1]["content"], r["rating"]) for r in rows] == [
        ("Q1?", "A1 [1].", 1),
        ("Q4?", "The right answer.", 0),
    ]
    assert rows[0]["sources"] == sources
    examples = load_examples(out)
    assert [(e.question, e.answer) for e in examples] == [
        ("Q1?", "A1 [1]."),
        ("Q4?", "The right answer."),
    ]
    assert unrated not in {r["answer_id"] for r in rows}
    assert store.delete_feedback(feedback_id) and store.stats()["corrected"] == 0


# Routes that need no model -------------------------------------------------------------------


def test_health_docs_and_route_order(client):
    assert client.get("/api/health").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert {
        "/api/chat",
        "/api/chat/qlora/train/{job_id}",
        "/v1/chat/completions",
        "/api/ingest",
    } <= set(spec["paths"])
    assert not any(path.startswith("/project") for path in spec["paths"])  # only the API
    assert client.get("/docs").status_code == 200
    assert "<html" in client.get("/").text.lower()  # Chainlit's UI still answers at /


def test_malformed_bodies_are_422_with_field_messages(client):
    cases = [
        ("/api/chat", {"messages": []}),
        ("/api/chat", {"messages": [{"role": "user", "content": "   "}]}),
        ("/api/chat", {"messages": [{"role": "assistant", "content": "hi"}]}),
        ("/api/chat", {"messages": [{"role": "user", "content": "q"}], "temperature": -1}),
        ("/api/chat", {"question": "q"}),
        # /v1 answers 400 with an OpenAI error object instead: tests/test_openai_client.py
        ("/api/chat/qlora/chat", {"message": ""}),
        ("/api/chat/qlora/train", {"conversations": []}),
        ("/api/chat/qlora/train", {"conversations": [{"prompt": "q", "response": " "}]}),
        ("/api/feedback", {"answer_id": "x", "rating": 5}),
    ]
    for path, body in cases:
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["detail"][0]["loc"], response.json()


def test_paths_through_the_api_cannot_escape(client):
    for adapter in ("../../etc", "/etc", "../" * 8 + "tmp"):
        response = client.post("/api/chat/qlora/load_trained", params={"adapter_path": adapter})
        assert response.status_code == 400, response.text
        assert "outside the allowed folders" in response.json()["detail"]
    body = {"conversations": [{"prompt": "q", "response": "a"}], "output_dir": "../../../tmp/evil"}
    response = client.post("/api/chat/qlora/train", json=body)
    assert response.status_code == 400, response.text
    assert not Path("/tmp/evil").exists()
    response = client.post("/api/chat/qlora/load", json={"model_name": "/etc"})
    assert response.status_code == 400, response.text


def test_qlora_load_refuses_lora_options(client):
    response = client.post("/api/chat/qlora/load", json={"model_name": "", "lora_r": 4})
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    assert "lora_r" in message and "send them with POST /api/chat/qlora/train" in message
    response = client.post("/api/chat/qlora/load", json={"target_modules": ["q_proj"]})
    assert response.status_code == 422 and "POST /api/chat/qlora/train" in response.text


def test_unknown_things_are_404(client, settings):
    assert client.get("/api/chat/qlora/train/nope").status_code == 404
    assert client.delete("/api/documents/no-such-file.pdf").status_code == 404
    missing = settings.checkpoints_path / "missing-adapter"
    response = client.post("/api/chat/qlora/load_trained", params={"adapter_path": str(missing)})
    assert response.status_code == 404, response.text
    assert client.post("/api/feedback", json={"answer_id": "nope", "rating": 1}).status_code == 404


def test_upload_type_and_size_are_checked(client, settings):
    response = client.post(
        "/api/ingest", files={"files": ("notes.exe", b"MZ", "application/octet-stream")}
    )
    assert response.status_code == 415
    assert ".pdf" in response.json()["accepted_types"]
    settings.max_upload_mb = 1
    try:
        big = b"a" * (1024 * 1024 + 1)
        response = client.post("/api/ingest", files={"files": ("big.txt", big, "text/plain")})
        assert response.status_code == 413, response.text
        assert "MAX_UPLOAD_MB" in response.json()["detail"]
        huge = {
            "content-length": str(30 * 1024 * 1024),
            "content-type": "multipart/form-data; boundary=x",
        }
        response = client.post("/api/ingest", content=b"--x--", headers=huge)  # refused unread
        assert response.status_code == 413 and "at most 20 files" in response.json()["detail"]
    finally:
        settings.max_upload_mb = 25
    assert not (settings.uploads_path / "big.txt").exists()


def test_api_key_guards_api_and_v1_but_not_health(client, api_key):
    assert client.get("/api/health").status_code == 200
    for method, path in (("get", "/api/status"), ("get", "/v1/models"), ("get", "/api/documents")):
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.post("/api/chat", json={"messages": [{"role": "user", "content": "q"}]}).status_code
        == 401
    )
    assert client.get("/api/documents", headers={"X-API-Key": api_key}).status_code == 200
    assert (
        client.get("/api/documents", headers={"Authorization": f"Bearer {api_key}"}).status_code
        == 200
    )
    # The chat is behind the key too (it was not: the bug): a login page, the key its password.
    from core.settings import get_settings
    from ui.auth import install_chat_login

    assert install_chat_login()
    try:
        assert client.get("/auth/config").json()["requireLogin"] is True
        assert client.post("/login", data={"username": "u", "password": "no"}).status_code == 401
        assert client.post("/login", data={"username": "u", "password": api_key}).status_code == 200
    finally:
        get_settings().api_key = None
        assert not install_chat_login()


def test_documents_upload_list_delete(client, settings, tmp_path):
    note = b"# Test note\n\nSection 99.1 says the zebra frequency is 123.45 MHz.\n"
    response = client.post(
        "/api/ingest", files=[("files", ("zebra-note.md", note, "text/markdown"))]
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["files_added"] == 1 and report["chunks_written"] >= 1, report
    assert (settings.uploads_path / "zebra-note.md").read_bytes() == note
    again = client.post(
        "/api/ingest", files=[("files", ("zebra-note.md", note, "text/markdown"))]
    ).json()
    assert again["files_unchanged"] == 1 and again["chunks_written"] == 0
    listed = {d["source"]: d for d in client.get("/api/documents").json()}
    assert listed["zebra-note.md"]["chunks"] >= 1
    assert "part15_general_conditions.md" in listed
    response = client.delete("/api/documents/zebra-note.md")
    assert response.status_code == 200 and response.json()["chunks_removed"] >= 1
    assert "zebra-note.md" not in {d["source"] for d in client.get("/api/documents").json()}


# With the model --------------------------------------------------------------------------------

QUESTION = "What are the two conditions of operation for a Part 15 device?"


@pytest.fixture(scope="module")
def assistant(settings, chat_model):
    """The service singleton serving the session's already loaded model (no second load)."""
    from services.assistant import get_assistant

    a = get_assistant()
    previous = a._llm
    a._llm = chat_model
    yield a
    a._llm = previous


def ask_body(question: str = QUESTION, **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 24, **extra}


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_chat_answers_with_numbered_sources_and_takes_feedback(client, assistant):
    body = {
        "messages": [
            {"role": "user", "content": "What does part 15 cover?"},
            {"role": "assistant", "content": "Unlicensed radio frequency devices [1]."},
            {"role": "user", "content": QUESTION},
        ],
        "max_tokens": 24,
        "k": 3,
        "mode": "hybrid",
    }
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["answer"].strip() and not answer["abstained"]
    assert 1 <= len(answer["sources"]) <= assistant.settings.evidence_passages  # passages
    assert [s["n"] for s in answer["sources"]] == sorted(s["n"] for s in answer["sources"])
    corpus_files = {p.name for p in SAMPLE_CORPUS.iterdir()}
    assert all(s["source"] in corpus_files and s["text"].strip() for s in answer["sources"])
    assert answer["model_info"]["model"] == "SmolLM2-135M-Instruct"
    assert answer["timestamp"] and answer["standalone_question"]
    # max_tokens bounds the draft; the follow-up's condensing call adds its own few tokens.
    assert answer["usage"]["completion_tokens"] <= 24 + CONDENSE_MAX_TOKENS

    rated = client.post(
        "/api/feedback",
        json={"answer_id": answer["id"], "rating": 0, "correction": "Two conditions."},
    )
    assert rated.status_code == 200
    exported = [json.loads(line) for line in client.get("/api/feedback/export").text.splitlines()]
    mine = next(row for row in exported if row["answer_id"] == answer["id"])
    assert mine["messages"][-1]["content"] == "Two conditions." and mine["question"] == QUESTION


def test_chat_streams_tokens_then_the_sources(client, assistant):
    with client.stream("POST", "/api/chat", json=ask_body(stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    tokens = [e["content"] for e in events[:-1] if e["type"] == "token"]
    finals = [e for e in events[:-1] if e["type"] == "final"]
    assert tokens and len(finals) == 1
    final = finals[0]
    assert final["sources"] and final["id"]
    # Verified answers stream quote first: the passage verbatim, then verified sentences.
    assert tokens[0].startswith("§ ") or ': "' in tokens[0], tokens[0]
    assert "".join(tokens) == final["answer"]


def test_openai_compatible_completions_and_models(client, assistant):
    response = client.post("/v1/chat/completions", json={"model": "any", **ask_body()})
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["role"] == "assistant"
    assert completion["choices"][0]["message"]["content"].strip()
    assert completion["sources"] and completion["usage"]["completion_tokens"] > 0

    with client.stream("POST", "/v1/chat/completions", json=ask_body(stream=True)) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["sources"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()

    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "SmolLM2-135M-Instruct"


def test_status_reports_model_store_and_versions(client, assistant, settings):
    status = client.get("/api/status").json()
    assert status["loaded"] and status["device"] == "cpu" and status["quantization"] == "none"
    assert status["collection"] == settings.collection_name and status["chunks"] > 0
    assert {"python", "torch", "transformers", "peft", "chainlit", "qdrant-client", "app"} <= set(
        status["versions"]
    )


def wait_for_job(
    client, job_id: str, timeout: float = 400, terminal=("succeeded", "failed")
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/chat/qlora/train/{job_id}").json()
        if job["state"] in terminal and job["finished_at"]:
            return job
        time.sleep(0.5)
    raise AssertionError(f"training job {job_id} still {job['state']} after {timeout}s")


def test_qlora_service_lifecycle(client, assistant, chat_model, settings):
    """train (202, 409 while running, progress; the LoRA options in the request) ->
    load_trained (hot swap) -> chat -> unload -> 409 -> load (a base model, nothing else)."""
    conversations = [
        {
            "prompt": "What does § 15.5 require?",
            "response": "No harmful interference; accept interference [1].",
        },
        {
            "prompt": "What is § 15.21 about?",
            "response": "Warning users about unapproved changes [1].",
        },
        {
            "prompt": "What detector applies below 1000 MHz?",
            "response": "A CISPR quasi-peak detector [1].",
        },
    ]
    body = {
        "conversations": conversations,
        "output_dir": "api-test-run",
        "epochs": 1,
        "batch_size": 1,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
    }
    response = client.post("/api/chat/qlora/train", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("queued", "running")
    assert client.post("/api/chat/qlora/train", json=body).status_code == 409

    job = wait_for_job(client, job["job_id"])
    assert job["state"] == "succeeded", job["error"]
    assert (
        job["step"] == job["total"] == 2
        and job["train_loss"] is not None
        and job["loss"] is not None
    )
    final = Path(job["final_model_path"])
    assert final.is_relative_to(settings.checkpoints_path.resolve() / "api-test-run")
    assert (final / "adapter_config.json").is_file()
    adapter_config = json.loads((final / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert adapter_config["lora_dropout"] == 0.1
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}
    arguments = json.loads((final / "training_info.json").read_text())["arguments"]
    assert (arguments["epochs"], arguments["batch_size"], arguments["lora_r"]) == (1, 1, 4)
    assert client.get("/api/chat/qlora/status").json()["training"]["state"] == "succeeded"

    try:
        status = client.post("/api/chat/qlora/load_trained", params={"adapter_path": str(final)})
        assert status.status_code == 200, status.text
        assert status.json()["adapter_path"] == str(final) and status.json()["loaded"]
        assert assistant.llm is chat_model  # hot swap: the base model was not reloaded
        response = client.post(
            "/api/chat/qlora/chat", params={"max_new_tokens": 16}, json={"message": QUESTION}
        )
        assert response.status_code == 200, response.text
        reply = response.json()
        assert reply["answer"].strip() and reply["sources"]
        assert reply["model_info"]["adapter"] == str(final)
    finally:
        name = chat_model.active_adapter
        chat_model.set_adapter(None)
        if name:
            chat_model.unload_adapter(name)

    status = client.post("/api/chat/qlora/unload").json()
    assert status["loaded"] is False
    response = client.post("/api/chat/qlora/chat", json={"message": QUESTION})
    assert response.status_code == 409 and "load" in response.json()["detail"]

    status = client.post("/api/chat/qlora/load", json={"model_name": ""})
    assert status.status_code == 200, status.text
    status = status.json()
    assert status["loaded"] and status["model_name"] == "SmolLM2-135M-Instruct"
    assert "lora_defaults" not in status
    shutil.rmtree(settings.checkpoints_path / "api-test-run", ignore_errors=True)


def test_max_tokens_beyond_the_context_window_is_a_422(client):
    """4096 new tokens cannot fit a 2,048-token window with a prompt: refused before any work,
    saying the most that fits (it used to be a 500 from inside the chain)."""
    question = [{"role": "user", "content": QUESTION}]
    response = client.post("/api/chat", json={"messages": question, "max_tokens": 4096})
    assert response.status_code == 422, response.text
    assert "context window: use at most 1536" in response.json()["detail"]
    response = client.post("/v1/chat/completions", json={"messages": question, "max_tokens": 4000})
    assert response.status_code == 422, response.text
    assert "use at most 1536" in response.json()["error"]["message"]
    response = client.post(
        "/api/chat/qlora/chat", params={"max_new_tokens": 2000}, json={"message": QUESTION}
    )
    assert response.status_code == 422, response.text
    response = client.post("/api/chat", json={"messages": question, "max_tokens": 8})
    assert response.status_code == 200, response.text


TRAIN_CONVERSATIONS = [
    {"prompt": "What does § 15.5 require?", "response": "No harmful interference [1]."},
    {"prompt": "What is § 15.21 about?", "response": "Unapproved changes [1]."},
]


def start_job(client, **body) -> dict:
    response = client.post("/api/chat/qlora/train", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def test_a_training_job_runs_apart_and_can_be_cancelled(client, settings):
    """The job is a child process: the server answers while it trains, DELETE stops it (every
    process of its group), the state says so, and the next job may start."""
    job = start_job(
        client,
        conversations=TRAIN_CONVERSATIONS * 4,
        output_dir="api-cancel-run",
        batch_size=1,
        max_steps=400,
        lora_r=4,
    )
    assert job["processes"] == 1 and Path(job["log_path"]).name == "train.log"
    deadline = time.monotonic() + 240
    while job["step"] < 1 and job["state"] == "running" and time.monotonic() < deadline:
        assert client.get("/api/health").status_code == 200
        time.sleep(0.5)
        job = client.get(f"/api/chat/qlora/train/{job['job_id']}").json()
    assert job["state"] == "running" and job["step"] >= 1, job
    assert job["total"] == 400

    response = client.delete(f"/api/chat/qlora/train/{job['job_id']}")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    job = wait_for_job(client, job["job_id"], terminal=("cancelled",))
    assert job["state"] == "cancelled" and job["final_model_path"] is None
    run_folder = settings.checkpoints_path / "api-cancel-run"
    assert not (run_folder / "final_model").exists()
    alive = subprocess.run(["pgrep", "-f", str(run_folder / "job.json")], capture_output=True)
    assert alive.returncode == 1, alive.stdout  # no process of the job is left
    assert client.delete(f"/api/chat/qlora/train/{job['job_id']}").json()["state"] == "cancelled"


def test_a_run_that_would_not_fit_fails_before_its_first_step(client):
    """The child checks its memory estimate against free memory and says what to lower."""
    job = start_job(
        client,
        conversations=TRAIN_CONVERSATIONS,
        output_dir="api-too-big",
        batch_size=4096,
        max_length=2048,
        max_steps=1,
    )
    job = wait_for_job(client, job["job_id"])
    assert job["state"] == "failed" and job["step"] == 0, job
    assert "Training would need about" in job["error"]
    assert "Lower batch_size or max_length" in job["error"]
