"""Shared fixtures: a private embedded Qdrant store, the sample corpus ingested once,
and the real default model loaded once for the whole session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "fcc-corpus"
# The team-written sample documents (every loader's format; the sample gold set's corpus).
SAMPLE_CORPUS = ROOT / "data" / "samples"
# The default corpus: 47 CFR Parts 97 and 80, eCFR XML (data/corpus/ecfr/SOURCES.md).
ECFR_CORPUS = ROOT / "data" / "corpus" / "ecfr"
TEST_COLLECTION = "test_corpus"

# Before anything reads the settings: tests never touch the app's own store or uploads.
_state = Path(tempfile.mkdtemp(prefix="fcc-rag-tests-"))
os.environ["QDRANT_PATH"] = str(_state / "qdrant")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _name in (
    "QDRANT_URL",
    "QDRANT_HOST",
    "API_KEY",
    "LOCAL_BASE_MODEL_PATH",
):
    os.environ.pop(_name, None)
# Tests mean the bare base unless they load an adapter themselves; the shipped default
# (data/adapters/smollm2-fcc-rag) has its own test (tests/test_default_adapter.py).
os.environ["LOCAL_ADAPTER_PATH"] = ""


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return _state


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"{SHARED_CORPUS} is absent")
    return SHARED_CORPUS


@pytest.fixture(scope="session")
def corpus_collection() -> str:
    """The sample corpus, ingested once into its own collection."""
    from ingest.pipeline import ingest_paths

    report = ingest_paths([SAMPLE_CORPUS], collection=TEST_COLLECTION, progress=False)
    assert report.files_skipped == 0, report.skipped
    return TEST_COLLECTION


@pytest.fixture(scope="session")
def chat_model():
    """The real default model (SmolLM2-135M-Instruct, fp32 on CPU), loaded once."""
    from chains.llm import QLoRAChatModel

    return QLoRAChatModel.load(max_new_tokens=48, temperature=0.0)


@pytest.fixture(scope="session", autouse=True)
def close_stores():
    """Close the Qdrant clients while the interpreter is still whole (no noise at exit)."""
    yield
    store = sys.modules.get("core.store")  # only if a test opened one
    if store is not None:
        store.close_clients()
    shutil.rmtree(_state, ignore_errors=True)
