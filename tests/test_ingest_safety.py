"""Ingest safety on real files and a real embedded store: `--list`, write-then-delete
re-ingest that survives a SIGKILL, and the shared tokenizer under two threads."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _env(qdrant_path: Path, **extra: str) -> dict:
    env = dict(
        os.environ,
        QDRANT_PATH=str(qdrant_path),
        HF_HUB_OFFLINE="1",
        OMP_WAIT_POLICY="PASSIVE",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    env.pop("QDRANT_URL", None)
    env.pop("QDRANT_HOST", None)
    return env


def _ingest_cli(args: list[str], store: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT,
        env=_env(store),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _doc(index: int, version: int) -> str:
    return (
        f"# Note {index}\n\n## § 15.{100 + index} Section {index}.\n\n"
        f"(a) Version {version} of note {index}: devices shall not cause harmful interference.\n"
    )


def test_list_shows_root_chunks_and_file_hash(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(_doc(1, 1))
    (docs / "sub").mkdir()
    (docs / "sub" / "b.txt").write_text(_doc(2, 1))
    store = tmp_path / "qdrant"
    result = _ingest_cli([str(docs), "--json", "--collection", "listing"], store)
    assert result.returncode == 0, result.stderr

    result = _ingest_cli(["--list", "--json", "--collection", "listing"], store)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["source"] for e in entries] == ["a.md", "sub/b.txt"]
    for entry in entries:
        assert entry["root"] == docs.resolve().as_posix()
        assert entry["chunks"] >= 1
        data = (docs / entry["source"]).read_bytes()
        assert entry["file_hash"] == hashlib.sha256(data).hexdigest()

    text = _ingest_cli(["--list", "--collection", "listing"], store)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert "a.md" in lines[0] and entries[0]["file_hash"] in lines[0] and "chunks" in lines[0]

    empty = _ingest_cli(["--list", "--json", "--collection", "nothing_here"], store)
    assert empty.returncode == 0 and empty.stdout == ""
    bad = _ingest_cli(["--list", str(docs)], store)
    assert bad.returncode == 2
    assert "--list" in _ingest_cli(["--help"], store).stdout


def _listing(store: Path, collection: str) -> dict[str, dict]:
    result = _ingest_cli(["--list", "--json", "--collection", collection], store)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    return {entry["source"]: entry for entry in entries}


def test_sigkill_while_replacing_changed_files_loses_nothing(tmp_path):
    """Re-ingest 150 changed files with a flush every 16 chunks; SIGKILL it after a few
    flushes: every file keeps its old or its new chunks; the next run completes, the one
    after writes nothing."""
    import re
    import signal
    import time

    docs = tmp_path / "docs"
    docs.mkdir()
    count = 150
    for index in range(count):
        (docs / f"note_{index:03d}.md").write_text(_doc(index, 1))
    store = tmp_path / "qdrant"
    collection = "killed"
    first = _ingest_cli([str(docs), "--json", "--collection", collection], store)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1])["files_added"] == count
    old = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir()}
    for index in range(count):
        (docs / f"note_{index:03d}.md").write_text(_doc(index, 2))
    new = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir()}

    # EMBED_BATCH_SIZE=1: a flush (embed, upsert, delete the stale ids) every 16 chunks.
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest", str(docs), "--collection", collection],
        cwd=ROOT,
        env=_env(store, EMBED_BATCH_SIZE="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    progress = re.compile(rb"(\d+)/%d \[" % count)
    seen = b""
    done = 0
    deadline = time.monotonic() + 300
    try:
        # The progress bar counts files handed to the writer; past 40 files at least two
        # flushes have run, and the run is far from its end.
        while done < 40 and time.monotonic() < deadline:
            block = os.read(process.stderr.fileno(), 4096)
            if not block:
                break
            seen = (seen + block)[-4096:]
            found = progress.findall(seen)
            done = int(found[-1]) if found else done
        assert done >= 40, seen.decode(errors="replace")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    listing = _listing(store, collection)
    assert set(listing) == set(old), "a file lost all its chunks"
    assert all(entry["chunks"] >= 1 for entry in listing.values())
    states = {name: entry["file_hash"] for name, entry in listing.items()}
    assert all(value in (old[name], new[name], None) for name, value in states.items())
    assert sum(states[name] == new[name] for name in states) >= 16, "killed before a flush"
    assert sum(states[name] == old[name] for name in states) >= 1, "the run was not cut short"

    second = _ingest_cli([str(docs), "--json", "--collection", collection], store)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout.splitlines()[-1])
    assert report["files_replaced"] >= 1 and report["files_skipped"] == 0
    listing = _listing(store, collection)
    assert {name: entry["file_hash"] for name, entry in listing.items()} == new
    assert all(entry["chunks"] == 1 for entry in listing.values())

    third = _ingest_cli([str(docs), "--json", "--collection", collection], store)
    assert third.returncode == 0, third.stderr
    report = json.loads(third.stdout.splitlines()[-1])
    assert report["chunks_written"] == 0 and report["files_unchanged"] == count


def test_chunking_tokenizer_is_not_disturbed_by_query_encoding():
    """Chunking measures whole texts while another thread encodes (truncated) queries with
    the shared embedder: the chunker's tokenizer must neither raise `Already borrowed` nor
    see the queries' truncation (with the shared tokenizer it got 256-token texts)."""
    import threading
    import time

    from core.settings import get_settings
    from core.store import get_client, get_embeddings, get_sentence_model
    from ingest.pipeline import _Writer

    settings = get_settings()
    writer = _Writer(get_client(settings), "unused", settings, recreate=False)
    chunker = writer.chunker
    assert chunker.tokenizer is not get_sentence_model(settings).tokenizer
    texts = ["(a) Devices shall not cause harmful interference. " * 120] * 8
    full = len(chunker._encode(texts[:1])["input_ids"][0])
    assert full > 1000
    query = "What is the Class B radiated emission limit at 3 meters? " * 40
    embeddings = get_embeddings(settings)
    model = get_sentence_model(settings)
    errors: list[str] = []
    stop = time.monotonic() + 8

    def chunking():
        while time.monotonic() < stop and not errors:
            try:
                lengths = {len(ids) for ids in chunker._encode(texts)["input_ids"]}
                if lengths != {full}:
                    errors.append(f"chunking saw truncated texts: {sorted(lengths)}")
            except Exception as error:  # RuntimeError: Already borrowed
                errors.append(repr(error))

    def querying():
        while time.monotonic() < stop and not errors:
            try:
                # What encoding a query does first (SentenceTransformer.encode -> tokenize),
                # in a tight loop so the race shows within seconds; then a real query.
                for _ in range(50):
                    model.tokenize([query])
                embeddings.embed_query(query)
            except Exception as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=chunking), threading.Thread(target=querying)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
