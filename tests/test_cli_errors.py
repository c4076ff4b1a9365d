"""Every command line reports the project's own errors as one line on stderr with exit
status 2, never a traceback (core.errors.cli_errors). Real subprocesses, real files."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_WAIT_POLICY": "PASSIVE",
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    for name in ("QDRANT_URL", "QDRANT_HOST"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_the_named_error_classes_exist():
    """core.errors names the classes it cannot import; each must still be where it says."""
    from core.errors import USER_ERRORS, is_user_error, qualified_name

    for name in USER_ERRORS:
        module, _, cls_name = name.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        assert qualified_name(cls) == name
        assert is_user_error(cls("x"))
    assert is_user_error(ValueError("bad option")) and not is_user_error(KeyError("bug"))


def test_cli_errors_wraps_a_main():
    from core.errors import cli_errors
    from core.models import ModelNotFoundError

    @cli_errors
    def failing(error):
        raise error

    assert failing(ModelNotFoundError("no model\nsecond line")) == 2
    with pytest.raises(KeyError):  # a bug keeps its traceback
        failing(KeyError("bug"))


def test_a_missing_model_path(tmp_path):
    done = run(
        ["-m", "cli", "ask", "What is Part 15?"],
        tmp_path,
        LOCAL_BASE_MODEL_PATH=str(tmp_path / "no-such-model"),
    )
    assert_one_error_line(done, "no-such-model", "does not exist")


def test_a_missing_embedding_model_in_ingest(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text about § 15.5.\n")
    done = run(["-m", "ingest", str(docs)], tmp_path, EMBEDDING_MODEL=str(tmp_path / "no-embedder"))
    assert_one_error_line(done, "no-embedder")


def test_a_bad_adapter_path(tmp_path):
    not_an_adapter = tmp_path / "not-an-adapter"
    not_an_adapter.mkdir()
    done = run(["-m", "cli.ask", "What is Part 15?", "--adapter", str(not_an_adapter)], tmp_path)
    assert_one_error_line(done, "not-an-adapter", "adapter_config.json")


def test_a_locked_store(tmp_path):
    store = tmp_path / "qdrant"
    store.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from qdrant_client import QdrantClient; "
            f"c = QdrantClient(path={str(store)!r}); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        done = run(["-m", "cli", "retrieve", "harmful interference"], tmp_path)
        summarize = run(["-m", "cli.summarize", "--list"], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert_one_error_line(done, "in use by another process")
    assert_one_error_line(summarize, "in use by another process")


def test_a_malformed_gold_file(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "q1", "question": \n[1, 2]\n')
    done = run(["-m", "evals", "--gold", str(gold), "--retrieval-only"], tmp_path)
    assert_one_error_line(done, "holds no valid gold item", "not valid JSON")


def test_malformed_training_data(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq1,a1\n,a2\n,\n")
    done = run(["-m", "finetune", "train", "--data", str(bad), "--strict"], tmp_path)
    assert_one_error_line(done, f"{bad}:3")
