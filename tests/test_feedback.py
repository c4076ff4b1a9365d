"""Feedback keeps the prompt the model saw, so the fine-tuning export trains on the served
format; adapters say what they were trained to read, and the assistant warns on a mismatch."""

from __future__ import annotations

import json
import sqlite3

from services.feedback import FeedbackStore

RAG_MESSAGES = [
    {"role": "system", "content": "You answer questions about FCC regulations ..."},
    {"role": "user", "content": "Sources:\n[1] (example.txt, § 1.1(a)) ...\n\nQuestion: When?"},
    {"role": "assistant", "content": "The office is open from 9 a.m. [2]."},
    {
        "role": "user",
        "content": "Sources:\n[1] (97.313.txt, § 97.313(b)) No station may transmit with a "
        "transmitter power exceeding 1.5 kW PEP.\n\nQuestion: What is the power limit?\n"
        "Answer briefly from the sources above and cite the source number like [1].",
    },
]


def test_answers_keep_their_messages_and_export_in_the_served_format(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite3")
    rag = store.record_answer(
        "What is the power limit?",
        "No station may exceed 1.5 kW PEP [1].",
        [{"n": 1, "source": "97.313.txt"}],
        messages=RAG_MESSAGES,
    )
    bare = store.record_answer("What is Part 15?", "Unlicensed devices.", [])
    store.rate(rag, 1)
    store.rate(bare, 0, correction="Part 15 covers unlicensed RF devices.")

    examples = store.examples()
    by_format = {e["prompt_format"]: e for e in examples}
    served = by_format["rag-evidence"]
    assert served["messages"] == [
        *RAG_MESSAGES,
        {"role": "assistant", "content": "No station may exceed 1.5 kW PEP [1]."},
    ]
    closed = by_format["closed-book"]
    assert closed["messages"] == [
        {"role": "user", "content": "What is Part 15?"},
        {"role": "assistant", "content": "Part 15 covers unlicensed RF devices."},
    ]
    assert store.stats()["with_messages"] == 1

    out = tmp_path / "rag.jsonl"
    assert store.export(out, prompt_format="rag-evidence") == 1
    from finetune.data import prompt_format_of, read_examples

    loaded = read_examples(out).examples
    assert prompt_format_of(loaded) == "rag-evidence"  # training recognises the format
    assert loaded[0].messages[0]["role"] == "system"  # no closed-book system prompt added
    both = tmp_path / "all.jsonl"
    assert store.export(both) == 2
    assert prompt_format_of(read_examples(both).examples) == "mixed"


def test_a_database_from_before_messages_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE answers (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, channel TEXT "
            "NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL, sources TEXT NOT NULL, "
            "model_info TEXT NOT NULL);"
            "INSERT INTO answers VALUES ('a1', '2026-01-01', 'chat', 'Q?', 'A.', '[]', '{}');"
        )
    store = FeedbackStore(path)
    store.rate("a1", 1)
    new = store.record_answer("Q2?", "A2 [1].", [], messages=RAG_MESSAGES)
    store.rate(new, 1)
    rows = {r.answer_id: r for r in store.rows()}
    assert rows["a1"].messages is None and rows["a1"].prompt_format == "closed-book"
    assert rows[new].messages == RAG_MESSAGES
    assert json.loads(json.dumps(store.examples()))  # JSON-ready


def _adapter(folder, prompt_format):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4}))
    info = {"train_loss": 1.0}
    if prompt_format:
        info["prompt_format"] = prompt_format
    (folder / "training_info.json").write_text(json.dumps(info))
    return folder


def test_adapters_are_found_with_their_format_and_a_warning(tmp_path):
    from core.settings import Settings
    from services.assistant import Assistant, adapter_prompt_format, adapter_warning

    checkpoints = tmp_path / "data" / "checkpoints"
    closed = _adapter(checkpoints / "qa-run" / "final_model", "closed-book")
    shipped = _adapter(tmp_path / "data" / "adapters" / "rag", "rag-evidence")
    elsewhere = _adapter(tmp_path / "elsewhere" / "mine", None)
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", local_adapter_path=str(elsewhere)
    )
    found = {a["name"]: a for a in Assistant(settings).available_adapters()}
    assert set(found) == {"qa-run", "rag", "mine"}  # checkpoints, shipped, LOCAL_ADAPTER_PATH
    assert found["rag"]["prompt_format"] == "rag-evidence" and found["rag"]["warning"] is None
    assert found["qa-run"]["prompt_format"] == "closed-book"
    assert "closed-book" in found["qa-run"]["warning"] and "RAG" in found["qa-run"]["warning"]
    assert adapter_prompt_format(elsewhere) is None and adapter_warning(elsewhere) is None
    assert adapter_warning(None) is None and adapter_prompt_format(closed) == "closed-book"
    assert adapter_warning(shipped) is None

    status = Assistant(settings).status()  # nothing loaded: no adapter, no warning
    assert status["adapter_warning"] is None and status["default_adapter"] == str(elsewhere)


def test_the_shipped_adapter_is_the_default_and_empty_means_the_bare_base(monkeypatch):
    from core.adapters import is_adapter_dir, read_training_info
    from core.settings import PROJECT_ROOT, Settings

    monkeypatch.delenv("LOCAL_ADAPTER_PATH", raising=False)
    default = Settings(_env_file=None).local_adapter_path
    assert default == str(PROJECT_ROOT / "data" / "adapters" / "smollm2-fcc-rag")
    assert is_adapter_dir(default)
    info = read_training_info(default)
    assert info["prompt_format"] == "rag-evidence" and info["quantization"] == "4bit"
    assert "../shared/fcc-corpus" not in json.dumps(info["data"])  # never the held-out corpus
    monkeypatch.setenv("LOCAL_ADAPTER_PATH", "")
    assert Settings(_env_file=None).local_adapter_path is None
