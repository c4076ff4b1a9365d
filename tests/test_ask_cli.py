"""`python -m chains.ask` as a user runs it: subprocesses on their own embedded store
(one process per store folder), plus the streaming output in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "samples"
FILES = ["part15_unintentional_radiators.md", "part15_labelling.html"]
ON_TOPIC = (
    "What is the radiated emission limit for a Class B digital device between 88 and 216 MHz?"
)


def _run(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict:
    """A private store with two sample files ingested through the ingest CLI."""
    base = tmp_path_factory.mktemp("ask-cli")
    corpus = base / "corpus"
    corpus.mkdir()
    for name in FILES:
        shutil.copy(SAMPLE / name, corpus / name)
    env = {**os.environ, "QDRANT_PATH": str(base / "qdrant"), "HF_HUB_OFFLINE": "1"}
    done = _run(["-m", "ingest", str(corpus), "--json"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return env


def test_batch_gives_one_json_line_per_input_line(cli_env, tmp_path):
    lines = [
        json.dumps({"question": ON_TOPIC}),
        json.dumps({"q": "   "}),
        "{not json",
        json.dumps({"q": "What is the best recipe for a chocolate cake with strawberries?"}),
        json.dumps(
            {
                "q": "And for Class A?",
                "history": [["What limits apply to Class B devices?", "150 uV/m."]],
            }
        ),
        json.dumps(["a list"]),
    ]
    batch = tmp_path / "questions.jsonl"
    batch.write_text("\n".join(lines) + "\n")

    done = _run(
        ["-m", "chains.ask", "--batch", str(batch), "--json", "--k", "2", "--max-new-tokens", "8"],
        cli_env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = [json.loads(line) for line in done.stdout.splitlines()]

    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]
    answered, empty, malformed, off_topic, follow_up, not_object = out
    assert answered["answer"] and not answered["abstained"] and answered["error"] is None
    assert answered["sources"] and set(answered["sources"][0]) >= {
        "n",
        "source",
        "page",
        "section",
        "heading",
        "score",
        "text",
        "cited",
    }
    assert set(answered["timings"]) >= {"retrieve_s", "first_token_s", "total_s"}
    assert 0 < answered["usage"]["completion_tokens"] <= 8
    assert "question" in empty["error"]
    assert "JSON" in malformed["error"] and "JSON" in not_object["error"]
    assert off_topic["abstained"] and off_topic["usage"]["completion_tokens"] == 0
    assert follow_up["question"] == "And for Class A?" and follow_up["answer"]


def test_retrieve_only_does_not_load_the_model(cli_env):
    env = {**cli_env, "LOCAL_BASE_MODEL_PATH": "/nonexistent/model"}  # loading it would fail
    done = _run(["-m", "chains.ask", ON_TOPIC, "--retrieve-only", "--json", "--k", "2"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(done.stdout.strip().splitlines()) == 1
    assert result["answer"] is None
    numbers = [s["n"] for s in result["sources"]]  # evidence passages of the 2 chunks
    assert numbers == list(range(1, len(numbers) + 1)) and numbers
    assert any(s["section"] == "15.109" for s in result["sources"])
    assert all(s["pinpoint"] for s in result["sources"])


def test_streams_the_answer_then_lists_sources(corpus_collection, capsys):
    from cli.ask import main
    from services.assistant import get_assistant

    try:
        code = main([ON_TOPIC, "--collection", corpus_collection, "--max-new-tokens", "8"])
    finally:
        get_assistant().unload()
    out = capsys.readouterr().out
    assert code == 0
    answer, _, listing = out.partition("\nSources")
    assert answer.strip()
    assert "[1] (part15_unintentional_radiators.md, § 15.109" in listing
