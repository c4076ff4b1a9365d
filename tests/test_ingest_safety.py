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
